"""The keras-tuner HyperModel of tf_lvae: a search-space config -> hyperparameters -> a trial.

The search space (`configs/search_space.py`) names each hyperparameter's type and range and the
experiment-config field it sets; `LVAEHyperModel` declares them on a `keras_tuner.HyperParameters`,
turns one set of values into a full experiment config, trains it with `tf_lvae.training.loop.train`
into a normal model_dir (so an interrupted trial resumes from its checkpoint), and scores it
with the validation importance-weighted bound computed by `tf_lvae.evaluation.likelihood.evaluate_images`,
the code `python -m tf_lvae.evaluate` runs.
"""
import math

import keras
import keras_tuner
import ml_collections

from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae import data
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae import experiment_config
from tf_lvae.training import loop as training
from tf_lvae.training import train_step

OBJECTIVE = "val_iw_bound"
HP_TYPES = ("choice", "int", "float", "boolean", "fixed")
SAMPLINGS = ("linear", "log", "reverse_log")
# Knobs computed from the experiment config's sizes rather than copied into one field.
DERIVED = ("num_layers", "width")
# Table/declaration order of the usual knobs; any other hyperparameter follows, by name.
ORDER = ("model", "num_layers", "width", "batch_norm", "warmup_epochs", "learning_rate",
         "mc_samples", "iw_samples")


class SearchSpaceError(ValueError):
    """A search-space entry of the wrong type, range or target field."""


def hparam_names(space):
    """Hyperparameter names in a stable order: the usual knobs first, then the rest by name."""
    names = list(space.hparams.keys())
    return [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)


def _field_exists(config, path):
    node = config
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def validate_search_space(space, base_config):
    """Raise SearchSpaceError naming the first bad entry; returns the space unchanged."""
    def require(condition, name, message):
        if not condition:
            raise SearchSpaceError(f"search_space.hparams.{name}: {message}")

    require(len(space.hparams) > 0, "*", "the search space has no hyperparameters")
    for name in hparam_names(space):
        entry = space.hparams[name]
        kind = entry.type
        require(kind in HP_TYPES, name, f"type must be one of {HP_TYPES}, got {kind!r}")
        if kind == "choice":
            require(len(entry.choices) >= 1, name, "type=choice needs at least one of choices")
            require(len({type(v) for v in entry.choices}) == 1, name,
                    f"choice values must share one type, got {entry.choices!r}")
        if kind == "fixed":
            require(len(entry.choices) == 1, name, f"type=fixed needs choices=(value,), got "
                                                  f"{entry.choices!r}")
        if kind in ("int", "float"):
            require(entry.min <= entry.max, name, f"min ({entry.min}) must be <= max "
                                                  f"({entry.max})")
            require(entry.sampling in SAMPLINGS, name,
                    f"sampling must be one of {SAMPLINGS}, got {entry.sampling!r}")
            require(entry.sampling == "linear" or entry.min > 0, name,
                    f"{entry.sampling} sampling needs min > 0, got {entry.min}")
            require(entry.step >= 0, name, f"step must be >= 0, got {entry.step}")
        if kind == "int":
            require(float(entry.min).is_integer() and float(entry.max).is_integer(), name,
                    f"type=int needs whole min/max, got {entry.min}, {entry.max}")
        if name in DERIVED:
            require(not entry.field, name, f"{name} is derived from the model sizes; leave "
                                           f"field empty, got {entry.field!r}")
        else:
            require(bool(entry.field) and _field_exists(base_config, entry.field), name,
                    f"field must name an experiment-config field such as "
                    f"'train.learning_rate', got {entry.field!r}")
    for spec in space.trial.epochs, space.objective.iw_samples, space.tuner.max_trials:
        if not (isinstance(spec, int) and spec >= 1):
            raise SearchSpaceError("search_space.trial.epochs, objective.iw_samples and "
                                   "tuner.max_trials must be integers >= 1")
    return space


def declare(hp, space):
    """Declare every hyperparameter of `space` on `hp`; returns {name: current value}."""
    values = {}
    for name in hparam_names(space):
        entry = space.hparams[name]
        step = entry.step or None
        if entry.type == "choice":
            values[name] = hp.Choice(name, list(entry.choices))
        elif entry.type == "fixed":
            values[name] = hp.Fixed(name, entry.choices[0])
        elif entry.type == "boolean":
            values[name] = hp.Boolean(name)
        elif entry.type == "int":
            values[name] = hp.Int(name, int(entry.min), int(entry.max),
                                  step=None if step is None else int(step),
                                  sampling=entry.sampling)
        else:
            values[name] = hp.Float(name, entry.min, entry.max, step=step,
                                    sampling=entry.sampling)
    return values


def trial_config(base_config, space, values, epochs=None):
    """The experiment config of one trial: base config + hyperparameter values.

    Training always uses the 'train' split and evaluates on 'validation' (the objective's
    split), so nothing a trial sees is the test set.
    """
    config = ml_collections.ConfigDict(base_config.to_dict())
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.train.epochs = int(epochs or space.trial.epochs)
    config.train.eval_every_epochs = space.trial.eval_every_epochs
    config.train.verbose = type(config.train.verbose)(space.trial.verbose)
    if space.trial.max_train_examples > 0:
        config.data.max_train_examples = space.trial.max_train_examples
    if "diagnostics_every_epochs" in config.train:
        config.train.diagnostics_every_epochs = space.trial.diagnostics_every_epochs
    num_layers = int(values.get("num_layers", len(config.model.latent_sizes)))
    width = float(values.get("width", 1.0))
    available = len(config.model.latent_sizes)
    if not 1 <= num_layers <= available:
        raise SearchSpaceError(f"num_layers={num_layers} is outside the experiment config's "
                               f"1..{available} stochastic layers")
    if not width > 0:
        raise SearchSpaceError(f"width must be > 0, got {width}")
    config.model.latent_sizes = tuple(max(1, round(s * width))
                                      for s in tuple(config.model.latent_sizes)[:num_layers])
    config.model.hidden_sizes = tuple(max(1, round(s * width))
                                      for s in tuple(config.model.hidden_sizes)[:num_layers])
    for name, value in values.items():
        if name in DERIVED or name not in space.hparams:
            continue
        *parents, leaf = space.hparams[name].field.split(".")
        node = config
        for part in parents:
            node = node[part]
        try:
            node[leaf] = value
        except TypeError as error:
            raise SearchSpaceError(f"hyperparameter {name}={value!r} does not fit "
                                   f"{space.hparams[name].field}: {error}") from error
    return experiment_config.validate_config(config)


class LVAEHyperModel(keras_tuner.HyperModel):
    """Ladder VAE / VAE hypermodel over the knobs of a search-space config.

    Args:
      base_config: the experiment config (`configs/<dataset>.py`) every trial starts from.
      space: the search-space ConfigDict (`configs/search_space.py`).
    """

    def __init__(self, base_config, space):
        super().__init__(name="lvae")
        self.base_config = base_config
        self.space = validate_search_space(space, base_config)

    def declare_hyperparameters(self, hp):
        declare(hp, self.space)

    def experiment_config(self, hp, epochs=None):
        """The trial's experiment config for the values in `hp` (declaring them if new)."""
        return trial_config(self.base_config, self.space, declare(hp, self.space), epochs)

    def build(self, hp):
        """An untrained model of the trial's architecture (its weights created)."""
        config = self.experiment_config(hp)
        return train_step.build_model(experiment_config.model_spec(config))

    def fit(self, hp, model, *, model_dir, epochs=None, callbacks=()):
        """Train the trial into `model_dir`, then score it; returns {metric: value}.

        `model` is not used (it may be None): `training.train` builds the same architecture
        itself, or restores it from `model_dir`'s checkpoint when the trial is resumed.
        Divergence (a non-finite loss, weights or bound) raises
        `keras_tuner.errors.FailedTrialError`, which keras-tuner records as a failed trial
        before going on with the search.
        """
        del model
        config = self.experiment_config(hp, epochs)
        try:
            model, history = training.train(config, model_dir, extra_callbacks=[
                keras.callbacks.TerminateOnNaN(), *callbacks])
        except FloatingPointError as error:  # e.g. weights that went non-finite
            raise keras_tuner.errors.FailedTrialError(f"training diverged: {error}") from error
        logs = history.history if history is not None else {}  # None: trained before a resume
        # The train step skips non-finite updates and counts them: report how many.
        skipped = int(sum(logs["skipped_steps"])) if "skipped_steps" in logs else None
        note = f" ({skipped} training steps skipped as non-finite)" if skipped else ""
        losses = logs.get("loss", [])
        if not all(math.isfinite(v) for v in losses):
            raise keras_tuner.errors.FailedTrialError(
                f"training diverged: loss {losses[-1]}{note}")
        try:
            result = self.score(model, config)
        except FloatingPointError as error:
            raise keras_tuner.errors.FailedTrialError(f"diverged: {error}{note}") from error
        metrics = {OBJECTIVE: result["iw_bound"], "val_elbo": result["elbo"]}
        if skipped is not None:
            metrics["skipped_steps"] = skipped
        return metrics

    def score(self, model, config):
        """evaluate_images on the validation split, with the arguments `tf_lvae.evaluate` uses.

        `python -m tf_lvae.evaluate --model_dir=TRIAL --split=validation --iw_samples=K
        --chunk_size=K --iw_batch_size=B --max_examples=N --seed=S` gives the same numbers.
        """
        objective = self.space.objective
        experiment = experiment_config.resolve(config)
        images, _ = data.load_arrays(experiment.data.dataset, "validation",
                                     data_dir=experiment.data.data_dir,
                                     num_validation=experiment.data.validation_size)
        if objective.max_examples > 0:
            images = images[:objective.max_examples]
        # The trial's checkpoint is written already: the population statistics go into the
        # model in memory only, as `tf_lvae.evaluate` does.
        bn_statistics = batch_norm_statistics.for_evaluation(model, experiment)
        result = evaluation.evaluate_images(
            model, images, iw_samples=objective.iw_samples, batch_size=experiment.eval.batch_size,
            iw_batch_size=objective.iw_batch_size, chunk_size=objective.iw_samples,
            seed=objective.seed, verbose=0)
        result["bn_statistics"] = bn_statistics
        return result
