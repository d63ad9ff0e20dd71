"""Checking an experiment config and turning it into the objects the library takes.

Configs come from `configs/*.py` (ml_collections ConfigDicts) and the command line; every bad
value is reported here, before any data is read or anything is written to a model_dir.
"""
from tf_lvae import data
from tf_lvae.training import fault_tolerance
from tf_lvae.model import layers
from tf_lvae.model.spec import ModelSpec

SPLITS = ("train", "validation", "test", "train+validation")
MAX_LAYERS = 5


class ConfigError(ValueError):
    """A config value that is out of range or of the wrong kind."""


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


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


def validate_config(config):
    """Raise ConfigError naming the first bad field; returns the config unchanged."""
    _require(config.data.dataset in data.DATASETS,
             f"unknown dataset {config.data.dataset!r}; expected one of "
             f"{', '.join(data.DATASETS)}")
    for field in ("train_split", "eval_split"):
        value = config.data[field]
        _require(value in SPLITS, f"data.{field} must be one of {SPLITS}, got {value!r}")
    _require(isinstance(config.data.num_validation, int) and config.data.num_validation >= -1,
             f"data.num_validation must be an int >= 0 (or -1 for the data set's default), "
             f"got {config.data.num_validation!r}")
    _require(isinstance(config.data.max_train_examples, int)
             and config.data.max_train_examples >= 0,
             f"data.max_train_examples must be an int >= 0 (0: all), got "
             f"{config.data.max_train_examples!r}")
    train = config.train
    for field in ("epochs", "batch_size", "mc_samples", "iw_samples"):
        _require(isinstance(train[field], int) and train[field] >= 1,
                 f"train.{field} must be an integer >= 1, got {train[field]!r}")
    for field in ("warmup_epochs", "eval_every_epochs", "seed"):
        _require(isinstance(train[field], int) and train[field] >= 0,
                 f"train.{field} must be an integer >= 0, got {train[field]!r}")
    _require(train.learning_rate > 0, f"train.learning_rate must be > 0, got "
                                      f"{train.learning_rate!r}")
    _require(train.adam_epsilon > 0, f"train.adam_epsilon must be > 0, got "
                                     f"{train.adam_epsilon!r}")
    for field in ("clip_global_norm", "clip_value"):
        value = fault_tolerance.train_option(config, field)
        _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0,
                 f"train.{field} must be a number >= 0 (0: no clipping), got {value!r}")
    decay = fault_tolerance.train_option(config, "lr_decay_factor")
    _require(isinstance(decay, (int, float)) and 0 < decay <= 1,
             f"train.lr_decay_factor must be in (0, 1], got {decay!r}")
    every = fault_tolerance.train_option(config, "lr_decay_every_epochs")
    _require(isinstance(every, int) and not isinstance(every, bool) and every >= 0,
             f"train.lr_decay_every_epochs must be an integer >= 0 (0: constant), got "
             f"{every!r}")
    _require(isinstance(fault_tolerance.train_option(config, "init_from"), str),
             "train.init_from must be a model_dir path or empty")
    bn_statistics = config.eval.get("bn_statistics", "population")
    _require(bn_statistics in ("population", "moving"),
             f"eval.bn_statistics must be population or moving, got {bn_statistics!r}")
    bn_batch = config.eval.get("bn_statistics_batch_size", 2000)
    _require(isinstance(bn_batch, int) and bn_batch >= 1,
             f"eval.bn_statistics_batch_size must be an integer >= 1, got {bn_batch!r}")
    precision = fault_tolerance.train_option(config, "precision")
    _require(precision in layers.PRECISIONS,
             f"train.precision must be one of {', '.join(layers.PRECISIONS)}, got "
             f"{precision!r}")
    for field in ("iw_samples", "batch_size", "iw_batch_size", "chunk_size"):
        _require(isinstance(config.eval[field], int) and config.eval[field] >= 1,
                 f"eval.{field} must be an integer >= 1, got {config.eval[field]!r}")
    _require(config.model.likelihood in ("auto", "bernoulli", "gaussian"),
             f"model.likelihood must be auto, bernoulli or gaussian, got "
             f"{config.model.likelihood!r}")
    try:
        model_spec(config)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return config


_OPTIONAL_MODEL_FIELDS = ("leaky_relu_slope", "batch_norm_heads", "upward_input",
                          "share_top_down")


def model_spec(config):
    """The ModelSpec a config describes (image shape and likelihood from the data set)."""
    data_spec = data.get_spec(config.data.dataset)
    likelihood = config.model.likelihood
    if likelihood == "auto":
        likelihood = data_spec.likelihood
    return ModelSpec(
        image_shape=data_spec.image_shape,
        latent_sizes=tuple(config.model.latent_sizes),
        hidden_sizes=tuple(config.model.hidden_sizes),
        inference=config.model.inference,
        likelihood=likelihood,
        activation=config.model.activation,
        batch_norm=bool(config.model.batch_norm),
        variance_floor=float(config.model.variance_floor),
        # Fields newer than some config.json files: absent means the ModelSpec default.
        **{name: config.model[name] for name in _OPTIONAL_MODEL_FIELDS
           if name in config.model},
    )


def num_validation(data_config):
    """data.num_validation as load_arrays takes it (None: the data set's default).

    data_config: the config's `data` section, a ConfigDict or the dict of a config.json.
    """
    value = data_config.get("num_validation", -1)
    return None if value < 0 else value
