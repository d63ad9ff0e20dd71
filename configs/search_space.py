"""The hyperparameter search space of `python -m tf_lvae.tune` (keras-tuner), and how it searches.

    python -m tf_lvae.tune --dataset=binarized_mnist --max_trials=20 --model_dir=runs/tune
    python -m tf_lvae.tune --search_space=configs/search_space.py:smoke --model_dir=runs/smoke
    python -m tf_lvae.tune --dataset=binarized_mnist --search_space.trial.epochs=5 \
        --search_space.hparams.model.choices="('lvae',)" \
        --search_space.hparams.learning_rate.min=3e-4

Every entry of `hparams` is one keras-tuner hyperparameter with the same fields:
  type      choice | int | float | boolean | fixed
  choices   choice: the candidates (the first is the default); fixed: (value,)
  min, max  int / float: the range (both ends included)
  sampling  int / float: linear | log | reverse_log
  step      int / float: grid step (0: none; for log sampling, a factor)
  field     the experiment-config field the value goes to ("" for the two derived knobs)
The derived knobs: `num_layers` keeps the bottom N stochastic layers of the experiment config's
latent/hidden sizes (the paper's 64-32-16-8-4 / 512-256-128-64-32), and `width` multiplies
them (sizes round to the nearest integer, at least 1). Narrow a knob to one value with
`type=fixed`; another file with the same `get_config()` can add hyperparameters for any
experiment-config field (`--search_space=my_space.py`).

The objective is the importance-weighted bound L_K with a small K on the first
`objective.max_examples` examples of the held-out 'validation' split (never 'test'),
computed by `tf_lvae.evaluation.trained.evaluate_model_dir`; higher is better.
"""
import ml_collections


def hparam(kind, choices=(), low=0.0, high=0.0, sampling="linear", step=0.0, field=""):
    """One hyperparameter; every entry carries every field so any of them can be overridden."""
    return ml_collections.ConfigDict(dict(type=kind, choices=tuple(choices), min=float(low),
                                          max=float(high), sampling=sampling,
                                          step=float(step), field=field))


def get_config(arg=None):
    """arg 'smoke' (`--search_space=configs/search_space.py:smoke`): a tiny search for tests."""
    config = ml_collections.ConfigDict()

    config.hparams = ml_collections.ConfigDict()
    config.hparams.model = hparam("choice", ("lvae", "vae"), field="model.inference")
    config.hparams.num_layers = hparam("int", low=2, high=5)
    config.hparams.width = hparam("choice", (1.0, 0.5, 0.25))
    config.hparams.batch_norm = hparam("boolean", field="model.batch_norm")
    config.hparams.warmup_epochs = hparam("choice", (0, 5, 10), field="train.warmup_epochs")
    config.hparams.learning_rate = hparam("float", low=1e-4, high=3e-3, sampling="log",
                                          field="train.learning_rate")
    config.hparams.mc_samples = hparam("choice", (1,), field="train.mc_samples")
    config.hparams.iw_samples = hparam("choice", (1, 5), field="train.iw_samples")

    config.trial = ml_collections.ConfigDict()
    config.trial.epochs = 20               # per trial (Hyperband: the most any trial gets)
    config.trial.max_train_examples = 0    # > 0: trials train on the first N examples only
    config.trial.eval_every_epochs = 0     # L_1 on 'validation' during training; 0: off
    config.trial.diagnostics_every_epochs = 0  # train.diagnostics_every_epochs of the trials
    config.trial.verbose = 2               # Keras: 0 silent, 1 progress bar, 2 one line an epoch

    config.objective = ml_collections.ConfigDict()
    config.objective.iw_samples = 50       # K of the validation L_K
    config.objective.max_examples = -1     # first N validation examples; -1: all of them
    config.objective.iw_batch_size = 100   # examples per L_K batch
    config.objective.seed = 0              # posterior samples of the evaluation

    config.tuner = ml_collections.ConfigDict()
    config.tuner.kind = "random"           # random | bayesian | hyperband
    config.tuner.max_trials = 10           # Hyperband: a cap on its own schedule
    config.tuner.seed = 1                  # 0: a random seed (keras-tuner's behaviour)
    config.tuner.max_consecutive_failed_trials = 3
    config.tuner.hyperband_factor = 3

    if arg == "smoke":  # 1-epoch trials of 1/16-width models on 5000 examples; L_10 on 500
        config.hparams.width = hparam("fixed", (0.0625,))
        config.trial.epochs = 1
        config.trial.max_train_examples = 5000
        config.objective.iw_samples = 10
        config.objective.max_examples = 500
        config.tuner.max_trials = 3
    elif arg is not None:
        raise ValueError(f"unknown search-space variant {arg!r}; expected 'smoke' or none")
    return config
