"""Flags shared by the command-line entry points, and turning errors into clear messages."""
import contextlib
import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
DEFAULT_DATASET = "binarized_mnist"


def _dataset_in_argv(argv):
    """The --dataset value on the command line, before flags are parsed (picks the config)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--dataset="):
            return arg.split("=", 1)[1]
        if arg == "--dataset" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def define_training_flags(argv):
    """Define the train CLI's flags; the config file defaults to configs/<--dataset>.py."""
    from tf_lvae import configs
    dataset = _dataset_in_argv(argv)
    try:
        default_config = configs.config_file(dataset or DEFAULT_DATASET)
    except ValueError:  # unknown data set: load the default config, validation names the error
        default_config = configs.config_file(DEFAULT_DATASET)
    config_flags.DEFINE_config_file(
        "config", str(default_config),
        "Experiment config file (default: configs/<dataset>.py); override fields with "
        "--config.train.epochs=5 etc.", lock_config=True)
    flags.DEFINE_string("dataset", None, "Data set: mnist, binarized_mnist, omniglot, norb, "
                        "fashion_mnist (default: the config's).")
    flags.DEFINE_string("model_dir", "runs/default", "Where checkpoints, logs and the config "
                        "go; rerunning with the same model_dir resumes.")
    flags.DEFINE_string("data_dir", None, "Folder with the data set's original files (works "
                        "offline).")
    flags.DEFINE_integer("epochs", None, "Shortcut for --config.train.epochs.")
    flags.DEFINE_enum("model", None, ["lvae", "vae"], "Shortcut for --config.model.inference.")
    flags.DEFINE_integer("layers", None, "Keep the bottom N stochastic layers of "
                         "64-32-16-8-4.")
    flags.DEFINE_integer("batch_size", None, "Shortcut for --config.train.batch_size.")
    flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy (shortcut for --config.train.strategy): mirrored "
                      "= all local GPUs, multi_worker = the cluster in TF_CONFIG; batch_size "
                      "stays the global batch.")


def resolved_config():
    """The config from --config and its overrides, with the shortcut flags applied."""
    from tf_lvae import experiment_config
    config = FLAGS.config
    with config.unlocked():
        experiment_config.apply_shortcuts(
            config, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, epochs=FLAGS.epochs,
            model=FLAGS.model, layers=FLAGS.layers, batch_size=FLAGS.batch_size)
        if FLAGS.strategy is not None:
            config.train.strategy = FLAGS.strategy
    return experiment_config.validate_config(config)


@contextlib.contextmanager
def clear_errors():
    """Print expected errors (bad config, missing data, bad model_dir) without a traceback."""
    from tf_lvae import data, experiment_config, fault_tolerance, model_dir
    try:
        yield
    except (experiment_config.ConfigError, data.DataNotFoundError,
            model_dir.ModelDirError, ValueError, FileNotFoundError,
            fault_tolerance.NonFiniteTrainingError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
