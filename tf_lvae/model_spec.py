"""The frozen description of one Ladder VAE / VAE architecture (what a model_dir stores)."""
import dataclasses
import json

INFERENCE_MODELS = ("lvae", "vae")
LIKELIHOODS = ("bernoulli", "gaussian")
# leaky_relu (MNIST, OMNIGLOT), tanh (NORB), linear (linear-Gaussian baselines and tests).
ACTIVATIONS = ("leaky_relu", "tanh", "linear")
PAPER_LATENT_SIZES = (64, 32, 16, 8, 4)
PAPER_HIDDEN_SIZES = (512, 256, 128, 64, 32)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Architecture of a hierarchical VAE; latent/hidden sizes are listed bottom (z_1) to top.

    hidden_sizes[0] is the width of the MLPs between x and z_1 (or d_1); hidden_sizes[i] the
    width of those between layer i and i+1, in both the inference and generative models.
    """
    image_shape: tuple = (28, 28, 1)
    latent_sizes: tuple = PAPER_LATENT_SIZES
    hidden_sizes: tuple = PAPER_HIDDEN_SIZES
    inference: str = "lvae"
    likelihood: str = "bernoulli"
    activation: str = "leaky_relu"
    batch_norm: bool = True
    variance_floor: float = 1e-5

    def __post_init__(self):
        for name in ("image_shape", "latent_sizes", "hidden_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.inference not in INFERENCE_MODELS:
            raise ValueError(f"model.inference must be one of {INFERENCE_MODELS}, "
                             f"got {self.inference!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"model.likelihood must be one of {LIKELIHOODS}, "
                             f"got {self.likelihood!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {ACTIVATIONS}, "
                             f"got {self.activation!r}")
        if not self.latent_sizes:
            raise ValueError("model.latent_sizes must name at least one stochastic layer")
        if len(self.hidden_sizes) != len(self.latent_sizes):
            raise ValueError(
                f"model.hidden_sizes needs one width per stochastic layer: got "
                f"{len(self.hidden_sizes)} widths for {len(self.latent_sizes)} layers")
        if min(self.latent_sizes + self.hidden_sizes) <= 0:
            raise ValueError("model.latent_sizes and model.hidden_sizes must be positive, got "
                             f"{self.latent_sizes} and {self.hidden_sizes}")
        if len(self.image_shape) != 3 or min(self.image_shape) <= 0:
            raise ValueError(f"image_shape must be (height, width, channels), got "
                             f"{self.image_shape}")
        if not self.variance_floor > 0:
            raise ValueError(f"model.variance_floor must be > 0, got {self.variance_floor}")

    @property
    def num_layers(self):
        return len(self.latent_sizes)

    @property
    def num_pixels(self):
        height, width, channels = self.image_shape
        return height * width * channels

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))
