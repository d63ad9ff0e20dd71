"""The frozen description of one Ladder VAE / VAE architecture (what a model_dir stores)."""
import dataclasses
import json

INFERENCE_MODELS = ("lvae", "vae")
LIKELIHOODS = ("bernoulli", "gaussian")
# leaky_relu (MNIST, OMNIGLOT), tanh (NORB), linear (linear-Gaussian baselines and tests).
ACTIVATIONS = ("leaky_relu", "tanh", "linear")
PAPER_LATENT_SIZES = (64, 32, 16, 8, 4)
PAPER_HIDDEN_SIZES = (512, 256, 128, 64, 32)
# The LVAE's upward MLP of layer i > 1 reads d_{i-1} (eq. 13) or mu_hat_{i-1} (the authors'
# `-only_mu_up True`).
UPWARD_INPUTS = ("hidden", "mean")
# Keras dtype policies a model can be built with (`HierarchicalVAE.from_spec(spec, precision)`).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Architecture of a hierarchical VAE; latent/hidden sizes are listed bottom (z_1) to top.

    hidden_sizes[0] is the width of the MLPs between x and z_1 (or d_1); hidden_sizes[i] the
    width of those between layer i and i+1, in both the inference and generative models.

    The fields after `variance_floor` choose between the paper's text (the defaults) and what
    the authors' code runs (`shared/OFFICIAL_CODE.md`; configs/mnist_authors.py):
      leaky_relu_slope: 0.1 as the paper writes max(x, 0.1x); Lasagne's leaky_rectify is 0.01.
      batch_norm_heads: BatchNorm between Linear and identity/softplus in every latent mean
        and variance head (never on p(x | z)), as the authors' `denselayer = batchnormlayer`.
      upward_input (LVAE only): "hidden" d_{i-1} (eq. 13) or "mean" mu_hat_{i-1}.
      share_top_down (LVAE only): True, eq. 18 merges with the generative p(z_i | z_{i+1});
        False, inference has its own top-down MLP (width hidden[i+1]) and heads, and the
        generative p(z_i | z_{i+1}) MLP has width hidden[i] (`-ladder_share_params False`).
    For the VAE the two LVAE-only fields are stored at their defaults.
    """
    image_shape: tuple = (28, 28, 1)
    latent_sizes: tuple = PAPER_LATENT_SIZES
    hidden_sizes: tuple = PAPER_HIDDEN_SIZES
    inference: str = "lvae"
    likelihood: str = "bernoulli"
    activation: str = "leaky_relu"
    batch_norm: bool = True
    variance_floor: float = 1e-5
    leaky_relu_slope: float = 0.1
    batch_norm_heads: bool = False
    upward_input: str = "hidden"
    share_top_down: bool = True

    def __post_init__(self):
        for name in ("image_shape", "latent_sizes", "hidden_sizes"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "leaky_relu_slope", float(self.leaky_relu_slope))
        if self.inference == "vae":  # no upward d_i and no merge: one way to write it down
            object.__setattr__(self, "upward_input", "hidden")
            object.__setattr__(self, "share_top_down", True)
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
        if not 0.0 <= self.leaky_relu_slope < 1.0:
            raise ValueError(f"model.leaky_relu_slope must be in [0, 1), got "
                             f"{self.leaky_relu_slope}")
        if self.upward_input not in UPWARD_INPUTS:
            raise ValueError(f"model.upward_input must be one of {UPWARD_INPUTS}, got "
                             f"{self.upward_input!r}")
        for name in ("batch_norm", "batch_norm_heads", "share_top_down"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}")
        if self.batch_norm_heads and not self.batch_norm:
            raise ValueError("model.batch_norm_heads=True needs model.batch_norm=True (the "
                             "authors' heads are batch-normalized only when the MLPs are)")

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
