"""An experiment's settings: every config field, its default and its check, in one place.

Configs come from `configs/*.py` (ml_collections ConfigDicts built on `default_config()`), the
command line, or a model_dir's config.json. `resolve(config)` turns any of them, once, into a
frozen `Experiment` (DataSettings, the ModelSpec, TrainSettings, EvalSettings) that the library
takes; a field missing from an older config.json gets its default here, and every bad value is
reported (ConfigError naming the field) before any data is read or anything is written.
"""
import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

# No TensorFlow at import: config files import this module, and the CLIs parse their flags
# (configs included) before TensorFlow loads. `data` is imported where a config is resolved.
from tf_lvae.model.spec import PRECISIONS, ModelSpec

MAX_LAYERS = 5
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
BN_STATISTICS = ("population", "moving")


class ConfigError(ValueError):
    """A config value that is out of range or of the wrong kind."""


@dataclasses.dataclass(frozen=True)
class DataSettings:
    dataset: str = "binarized_mnist"
    data_dir: typing.Optional[str] = None  # None: the shipped data or TFDS
    train_split: str = "train"           # or "train+validation" (the paper's full train set)
    eval_split: str = "test"             # the split evaluated during and after training
    num_validation: int = -1             # held-out examples; -1: the data set's default
    max_train_examples: int = 0          # > 0: train on the first N only (smoke runs)

    @property
    def validation_size(self):
        """num_validation as `data.load_arrays` takes it (None: the data set's default)."""
        return None if self.num_validation < 0 else self.num_validation


# The config's `model` section: the ModelSpec's fields (their defaults are ModelSpec's), less
# the image shape, which the data set gives, and with likelihood "auto" (from the data set).
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec) if f.name != "image_shape")
LIKELIHOOD_AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    epochs: int = 2000
    batch_size: int = 256                # the global batch under a strategy
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-4           # the authors' Adam epsilon
    warmup_epochs: int = 200             # beta 0 -> 1 over these epochs; 0 disables
    mc_samples: int = 1
    iw_samples: int = 1
    seed: int = 0
    # The authors' gradient clipping (training/gradient_clipping.py): global norm, then each
    # element; 0 disables either (the paper does not clip; configs/mnist_authors.py: 4, 0.9).
    clip_global_norm: float = 0.0
    clip_value: float = 0.0
    # Learning rate x lr_decay_factor every lr_decay_every_epochs epochs (0: constant); the
    # paper's fine-tuning uses 0.75 every 200 (configs/mnist_finetune.py).
    lr_decay_factor: float = 1.0
    lr_decay_every_epochs: int = 0
    init_from: str = ""                  # a model_dir whose weights a new run starts from
    jit_compile: bool = True
    # float32 | mixed_bfloat16 | mixed_float16 (loss-scaled): 16-bit MLP matmuls with float32
    # weights, distribution heads and log-densities (for GPUs/TPUs; CPUs gain nothing)
    precision: str = "float32"
    # Up to this many train steps per call into TensorFlow: with XLA and no strategy they run
    # as one XLA loop (fast/step_loop.py; docs/PERFORMANCE.md). The largest divisor of the
    # steps per epoch (and of a resumed epoch's done steps) not above it is used, so no call
    # spans two epochs. Progress, checkpoints and runs of skipped steps are seen at call ends;
    # 1: after every step.
    steps_per_execution: int = 100
    eval_every_epochs: int = 10          # L_1 on data.eval_split during training; 0 disables
    # Scale-out and fault tolerance (docs/FAULT_TOLERANCE.md).
    strategy: str = "default"            # default | mirrored | multi_worker (TF_CONFIG) | tpu
    tpu: str = ""                        # TPU name or address for strategy=tpu
    sync_batch_norm: bool = False        # batch statistics over the global batch
    checkpoint_every_steps: int = 500    # and at every epoch end; 0: epoch ends only
    max_consecutive_skips: int = 10      # non-finite steps in a row before training stops
    diagnostics_every_epochs: int = 10   # small-K L_K, per-unit KL, images; 0 disables
    diagnostics_iw_samples: int = 100    # K of the diagnostics' L_K
    diagnostics_examples: int = 1000     # examples of the eval and train subsets
    verbose: int = 1                     # Keras: 1 progress bar, 2 one line per epoch, 0 silent


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    iw_samples: int = 5000
    batch_size: int = 256                # examples per L_1 batch
    iw_batch_size: int = 20              # examples per L_K batch
    chunk_size: int = 1000               # importance samples per chunk (memory ~ batch * chunk)
    seed: int = 0
    # BatchNorm statistics of every evaluation and export: population (one pass over the
    # training split under the final weights, as the authors' code) | moving (Keras' averages)
    bn_statistics: str = "population"
    bn_statistics_batch_size: int = 2000  # examples per batch of that pass


SECTIONS = {"data": DataSettings, "train": TrainSettings, "eval": EvalSettings}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A resolved, checked config: what the library takes."""
    data: DataSettings
    model: ModelSpec
    train: TrainSettings
    eval: EvalSettings
    model_section: tuple  # the config's model fields, (name, value) pairs (likelihood: maybe auto)

    def to_dict(self):
        """The config as config.json stores it (every field, defaults filled in)."""
        return dict(data=dataclasses.asdict(self.data), model=dict(self.model_section),
                    train=dataclasses.asdict(self.train), eval=dataclasses.asdict(self.eval))

    def to_config(self):
        """The same as an ml_collections ConfigDict."""
        return ml_collections.ConfigDict(self.to_dict())


def _model_defaults():
    spec = ModelSpec()
    defaults = {name: getattr(spec, name) for name in MODEL_FIELDS}
    defaults["likelihood"] = LIKELIHOOD_AUTO
    return defaults


def default_config():
    """Every field at its default, as a ConfigDict (what configs/base.py starts from)."""
    config = ml_collections.ConfigDict()
    for name, settings in SECTIONS.items():
        section = ml_collections.ConfigDict()
        hints = typing.get_type_hints(settings)
        for field in dataclasses.fields(settings):
            value = field.default
            # None fields keep their type, so --config.data.data_dir=DIR still parses.
            section[field.name] = (config_dict.placeholder(typing.get_args(hints[field.name])[0])
                                   if value is None else value)
        config[name] = section
    config.model = ml_collections.ConfigDict(_model_defaults())
    return config


def apply_shortcuts(config, dataset=None, data_dir=None, epochs=None, model=None, layers=None,
                    batch_size=None):
    """Apply the CLI shortcut flags (None leaves a field as configured); returns config.

    layers=N keeps the bottom N stochastic layers of the configured sizes (the paper's
    shallower models drop layers from the top).
    """
    if dataset is not None:
        config.data.dataset = dataset
    if data_dir is not None:
        config.data.data_dir = data_dir
    if epochs is not None:
        config.train.epochs = epochs
    if model is not None:
        config.model.inference = model
    if batch_size is not None:
        config.train.batch_size = batch_size
    if layers is not None:
        available = len(config.model.latent_sizes)
        _require(1 <= layers <= available,
                 f"--layers must be between 1 and {available} (the configured latent sizes "
                 f"{tuple(config.model.latent_sizes)}), got {layers}")
        config.model.latent_sizes = tuple(config.model.latent_sizes)[:layers]
        config.model.hidden_sizes = tuple(config.model.hidden_sizes)[:layers]
    return config


def resolve(config):
    """The checked, frozen Experiment of a ConfigDict, a config.json dict or an Experiment.

    Raises ConfigError naming the first unknown or bad field.
    """
    if isinstance(config, Experiment):
        return config
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    config = dict(config or {})
    unknown = set(config) - set(SECTIONS) - {"model"}
    _require(not unknown, f"unknown config section(s) {sorted(unknown)}; expected data, model, "
                          "train, eval")
    sections = {}
    for name, settings in SECTIONS.items():
        given = dict(config.get(name) or {})
        fields = {f.name for f in dataclasses.fields(settings)}
        extra = sorted(set(given) - fields)
        _require(not extra, f"unknown field(s) {', '.join(f'{name}.{e}' for e in extra)}")
        sections[name] = settings(**given)
    model_section = dict(_model_defaults(), **dict(config.get("model") or {}))
    extra = sorted(set(model_section) - set(MODEL_FIELDS))
    _require(not extra, f"unknown field(s) {', '.join(f'model.{e}' for e in extra)}")
    for field in ("latent_sizes", "hidden_sizes"):
        model_section[field] = tuple(model_section[field])
    _check(sections["data"], sections["train"], sections["eval"], model_section)
    spec = _model_spec(sections["data"], model_section)
    return Experiment(data=sections["data"], model=spec, train=sections["train"],
                      eval=sections["eval"], model_section=tuple(model_section.items()))


def validate_config(config):
    """Raise ConfigError naming the first bad field; returns the config unchanged."""
    resolve(config)
    return config


def model_spec(config):
    """The ModelSpec a config describes (image shape and likelihood from the data set)."""
    return resolve(config).model


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _model_spec(data_settings, model_section):
    from tf_lvae import data
    data_spec = data.get_spec(data_settings.dataset)
    fields = dict(model_section)
    if fields["likelihood"] == LIKELIHOOD_AUTO:
        fields["likelihood"] = data_spec.likelihood
    try:
        return ModelSpec(image_shape=data_spec.image_shape, **fields)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from error


def _check(data_settings, train, evaluation, model_section):
    from tf_lvae import data
    _require(data_settings.dataset in data.DATASETS,
             f"unknown dataset {data_settings.dataset!r}; expected one of "
             f"{', '.join(data.DATASETS)}")
    for field in ("train_split", "eval_split"):
        value = getattr(data_settings, field)
        _require(value in data.SPLITS, f"data.{field} must be one of {data.SPLITS}, got "
                                       f"{value!r}")
    _require(_is_int(data_settings.num_validation) and data_settings.num_validation >= -1,
             f"data.num_validation must be an int >= 0 (or -1 for the data set's default), "
             f"got {data_settings.num_validation!r}")
    _require(_is_int(data_settings.max_train_examples) and data_settings.max_train_examples >= 0,
             f"data.max_train_examples must be an int >= 0 (0: all), got "
             f"{data_settings.max_train_examples!r}")
    for field in ("epochs", "batch_size", "mc_samples", "iw_samples"):
        value = getattr(train, field)
        _require(_is_int(value) and value >= 1,
                 f"train.{field} must be an integer >= 1, got {value!r}")
    for field in ("warmup_epochs", "eval_every_epochs", "seed", "diagnostics_every_epochs"):
        value = getattr(train, field)
        _require(_is_int(value) and value >= 0,
                 f"train.{field} must be an integer >= 0, got {value!r}")
    for field in ("diagnostics_iw_samples", "diagnostics_examples"):
        value = getattr(train, field)
        _require(_is_int(value) and value >= 1,
                 f"train.{field} must be an integer >= 1, got {value!r}")
    _require(_is_number(train.learning_rate) and train.learning_rate > 0,
             f"train.learning_rate must be > 0, got {train.learning_rate!r}")
    _require(_is_number(train.adam_epsilon) and train.adam_epsilon > 0,
             f"train.adam_epsilon must be > 0, got {train.adam_epsilon!r}")
    for field in ("clip_global_norm", "clip_value"):
        value = getattr(train, field)
        _require(_is_number(value) and value >= 0,
                 f"train.{field} must be a number >= 0 (0: no clipping), got {value!r}")
    _require(_is_number(train.lr_decay_factor) and 0 < train.lr_decay_factor <= 1,
             f"train.lr_decay_factor must be in (0, 1], got {train.lr_decay_factor!r}")
    _require(_is_int(train.lr_decay_every_epochs) and train.lr_decay_every_epochs >= 0,
             f"train.lr_decay_every_epochs must be an integer >= 0 (0: constant), got "
             f"{train.lr_decay_every_epochs!r}")
    _require(isinstance(train.init_from, str), "train.init_from must be a model_dir path or empty")
    _require(train.precision in PRECISIONS,
             f"train.precision must be one of {', '.join(PRECISIONS)}, got {train.precision!r}")
    _require(train.strategy in STRATEGIES,
             f"train.strategy must be one of {', '.join(STRATEGIES)}, got {train.strategy!r}")
    for name, minimum in (("checkpoint_every_steps", 0), ("max_consecutive_skips", 1),
                          ("steps_per_execution", 1)):
        value = getattr(train, name)
        _require(_is_int(value) and value >= minimum,
                 f"train.{name} must be an integer >= {minimum}, got {value!r}")
    _require(evaluation.bn_statistics in BN_STATISTICS,
             f"eval.bn_statistics must be population or moving, got "
             f"{evaluation.bn_statistics!r}")
    for field in ("iw_samples", "batch_size", "iw_batch_size", "chunk_size",
                  "bn_statistics_batch_size"):
        value = getattr(evaluation, field)
        _require(_is_int(value) and value >= 1,
                 f"eval.{field} must be an integer >= 1, got {value!r}")
    _require(model_section["likelihood"] in (LIKELIHOOD_AUTO, "bernoulli", "gaussian"),
             f"model.likelihood must be auto, bernoulli or gaussian, got "
             f"{model_section['likelihood']!r}")
