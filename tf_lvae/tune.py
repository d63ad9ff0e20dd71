"""Search LVAE / VAE hyperparameters with keras-tuner.

    python -m tf_lvae.tune --dataset=binarized_mnist --max_trials=20 --model_dir=runs/tune
    python -m tf_lvae.tune --dataset=binarized_mnist --tuner=hyperband --model_dir=runs/hb
    python -m tf_lvae.tune --search_space=configs/search_space.py:smoke --model_dir=runs/smoke
    python -m tf_lvae.evaluate --model_dir=runs/tune/best --split=test

--dataset picks the experiment config configs/<dataset>.py (override with --config=FILE and
--config.<section>.<field>=VALUE); --data_dir, --epochs, --model, --layers and --batch_size mean
what they mean to tf_lvae.train, for every trial (--epochs=5 is --search_space.trial.epochs=5,
--model=vae searches VAEs only). The search space is --search_space=configs/search_space.py
(override with --search_space.hparams.learning_rate.max=1e-2 etc.; see that file). The objective
is L_K on the validation split (search_space.objective). Prints the results table and writes
MODEL_DIR/results.{csv,json}; the best trial's model_dir is copied to MODEL_DIR/best. Rerunning
with the same --model_dir resumes the search.
"""
import sys

from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS


def define_flags(argv):
    from tf_lvae import configs
    dataset = cli._dataset_in_argv(argv) or cli.DEFAULT_DATASET
    try:
        default_config = configs.config_file(dataset)
    except ValueError:  # unknown data set: validation names the error
        default_config = configs.config_file(cli.DEFAULT_DATASET)
    cli.define_config_file(
        "config", default_config, "Experiment config the trials start from (default: "
        "configs/<dataset>.py).")
    cli.define_config_file(
        "search_space", configs.CONFIG_DIR / "search_space.py",
        "Search-space config (hyperparameters, per-trial epochs, objective, tuner).")
    cli.define_shortcut_flags(search=True)
    flags.DEFINE_enum("tuner", None, ["random", "bayesian", "hyperband"],
                      "keras-tuner algorithm (default: search_space.tuner.kind).")
    flags.DEFINE_integer("max_trials", None, "Trials to run in all (default: "
                         "search_space.tuner.max_trials); raise it to extend a search.")
    flags.DEFINE_string("model_dir", "runs/tune", "Where the search, results and best model "
                        "go; rerunning with the same model_dir resumes.")


def apply_shortcuts(config, space, epochs=None, model=None, layers=None, batch_size=None,
                    **data):
    """The shortcut flags on a search, meaning what they mean to tf_lvae.train, per trial.

    epochs sets search_space.trial.epochs (Hyperband: the most a trial gets); model, layers
    and batch_size set the experiment config, and a hyperparameter of `space` that would vary
    what they set (num_layers for layers) is fixed at that value. data: dataset, data_dir.
    """
    from tf_lvae import experiment_config
    experiment_config.apply_shortcuts(config, model=model, layers=layers,
                                      batch_size=batch_size, **data)
    if epochs is not None:
        space.trial.epochs = epochs
    fixed = {"model.inference": model, "train.batch_size": batch_size, "train.epochs": epochs}
    for name in space.hparams:
        entry = space.hparams[name]
        value = layers if name == "num_layers" else fixed.get(entry.field)
        if value is not None:
            entry.type, entry.choices = "fixed", (value,)
    return config, space


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tf_lvae import experiment_config  # imported late so --help stays fast
    from tf_lvae.tuning import search as tuning
    with cli.clear_errors(after="the search resumes: finished trials are kept and the "
                          "interrupted one resumes from its last checkpoint"):
        config = FLAGS.config
        with config.unlocked():
            apply_shortcuts(config, FLAGS.search_space, **cli.shortcuts())
        experiment_config.validate_config(config)
        if FLAGS.max_trials is not None and FLAGS.max_trials < 1:
            raise ValueError(f"--max_trials must be >= 1, got {FLAGS.max_trials}")
        _, results = tuning.run_search(config, FLAGS.search_space, FLAGS.model_dir,
                                       kind=FLAGS.tuner, max_trials=FLAGS.max_trials)
    if results["best_trial"] is None:
        print("error: no trial completed; see the errors above", file=sys.stderr)
        sys.exit(1)
    print(f"results in {FLAGS.model_dir}/results.csv and results.json; best model in "
          f"{results['best_dir']}")


if __name__ == "__main__":
    cli.run(main, lambda: define_flags(sys.argv))
