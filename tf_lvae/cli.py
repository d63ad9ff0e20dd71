"""Flags shared by the command-line entry points, and turning errors into clear messages.

Every entry point runs `cli.run(main, define_flags)`: a bad flag or config override (an
unknown field, a value of the wrong type, one that does not parse, a config file that does not
load) is one line `error: ...` and exit code 2, like every other bad input, instead of absl's
"FATAL Flags parsing error" (exit 1) or ml_collections' traceback. Inside main,
`clear_errors()` does the same for expected errors (bad config, missing data, a bad or busy
model_dir, a full or read-only disk).
"""
import contextlib
import difflib
import errno
import importlib.util
import logging
import os
import re
import shlex
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
from ml_collections import config_dict
from ml_collections import config_flags

FLAGS = flags.FLAGS
DEFAULT_DATASET = "binarized_mnist"
# The config-file flags defined through define_config_file: name -> default file.
CONFIG_FLAGS = {}


def _dataset_in_argv(argv):
    """The --dataset value on the command line, before flags are parsed (picks the config)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--dataset="):
            return arg.split("=", 1)[1]
        if arg == "--dataset" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def define_config_file(name, default, help_string):
    """config_flags.DEFINE_config_file (locked: overrides may only set existing fields)."""
    CONFIG_FLAGS[name] = str(default)
    config_flags.DEFINE_config_file(name, str(default), help_string, lock_config=True)


def define_training_flags(argv):
    """Define the train CLI's flags; the config file defaults to configs/<--dataset>.py."""
    from tf_lvae import configs
    dataset = _dataset_in_argv(argv)
    try:
        default_config = configs.config_file(dataset or DEFAULT_DATASET)
    except ValueError:  # unknown data set: load the default config, validation names the error
        default_config = configs.config_file(DEFAULT_DATASET)
    define_config_file(
        "config", default_config,
        "Experiment config file (default: configs/<dataset>.py); override fields with "
        "--config.train.epochs=5 etc.")
    flags.DEFINE_string("dataset", None, "Data set: mnist, binarized_mnist, omniglot, norb, "
                        "fashion_mnist, mnist_dequantized (default: the config's).")
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


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# --- flags and config overrides -------------------------------------------------------------

def run(main, define_flags=None):
    """absl's app.run(main), with flag and config-override errors as one `error:` line (exit 2).

    define_flags: defines the entry point's flags; a config-file flag parses its default file
    (and the overrides on the command line) already when it is defined.
    """
    with _flag_errors(sys.argv):
        if define_flags is not None:
            define_flags()
    # TensorFlow's own INFO lines ("Sharding callback duration ...") are not the user's news;
    # its warnings and errors, and every line of tf_lvae's, still show.
    absl_logging.get_absl_handler().addFilter(_no_library_info)
    app.run(main, flags_parser=parse_flags)


_LIBRARIES = ("tensorflow", "keras", "tf_keras", "tensorflow_datasets", "h5py")


def _no_library_info(record):
    """logging filter: False for INFO and DEBUG records logged by TensorFlow or Keras code
    (their own logger, or absl.logging called from their files)."""
    parts = set(re.split(r"[\\/]", record.pathname or ""))
    library = (record.name.split(".", 1)[0] in _LIBRARIES
               or ("site-packages" in parts and parts & set(_LIBRARIES)))
    return record.levelno >= logging.WARNING or not library


def parse_flags(argv):
    """FLAGS(argv) for app.run, exiting with one `error:` line on any bad flag or override."""
    with _flag_errors(argv):
        remaining = FLAGS(argv)
        for name in CONFIG_FLAGS:
            if name in FLAGS:
                _check_tuple_overrides(name, _config_or_fail(name, FLAGS[name].value, argv),
                                       argv)
    return remaining


def _check_tuple_overrides(name, config, argv):
    """Exit if an override gave a tuple field elements of another type (ml_collections checks
    only that it is a tuple): --config.model.latent_sizes=abc is not a tuple of integers."""
    overrides = [(flag, path, raw) for flag, path, raw in _overrides(name, argv)
                 if isinstance(_field(config, path), tuple)]
    if not overrides:
        return
    original = _load_config(name, argv)
    for flag, path, raw in overrides:
        before, after = _field(original, path), _field(config, path)
        kinds = {type(v) for v in before}
        if not isinstance(before, tuple) or not kinds:
            continue
        if float in kinds:
            kinds.add(int)
        bad = [v for v in after if type(v) not in kinds]
        if bad:
            plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
            wanted = " or ".join(sorted(plural.get(k, k.__name__) for k in kinds
                                        if not (k is int and float in kinds)))
            _fail(f"--{flag}={raw}: {path} takes a tuple of {wanted} such as {before!r}, "
                  f"got {after!r}")


@contextlib.contextmanager
def _flag_errors(argv):
    try:
        yield
    except flags.Error as error:  # absl's: unknown flag, unparsable value, ...
        _fail(_flag_error_message(error, argv))
    except BrokenPipeError:  # --help piped into `head`
        raise
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as error:
        # ml_collections' lookups of --config.<path> overrides raise these unwrapped.
        _fail(_override_error_message(error, argv))


def _first_line(text):
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _config_value_in_argv(name, argv):
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _config_or_fail(name, config, argv):
    """`config` if the config file of flag `name` loaded; else exit naming why not."""
    try:
        config.get("")  # ml_collections' stand-in for a file that failed to load raises here
    except OSError as error:
        cause = error.__cause__ or error
        detail = [line.strip() for line in str(cause).splitlines() if line.strip()][-1]
        path = _config_value_in_argv(name, argv) or CONFIG_FLAGS.get(name)
        _fail(f"--{name}={path}: cannot load the config file ({detail})")
    return config


def _overrides(name, argv):
    """[(flag text, field path, value)] of the --name.<path>[=value] overrides in argv."""
    found = []
    for i, arg in enumerate(argv):
        match = re.match(rf"^--?(no)?{re.escape(name)}\.([^=]+)(?:=(.*))?$", arg, re.DOTALL)
        if match:
            value = match.group(3)
            if value is None and i + 1 < len(argv) and not match.group(1):
                value = argv[i + 1]
            found.append((arg.split("=", 1)[0].lstrip("-"), match.group(2), value))
    return found


def _load_config(name, argv):
    """get_config() of the file flag `name` names (FILE or FILE:ARG), without overrides."""
    path, _, arg = (_config_value_in_argv(name, argv) or CONFIG_FLAGS[name]).partition(":")
    spec = importlib.util.spec_from_file_location(f"_tf_lvae_cli_{name}", path)
    if spec is None:
        raise ValueError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*([arg] if arg else []))


def _unknown_field(config, path):
    """What is wrong with field path `path` ("train.epochs") of `config`, or None if it exists."""
    node, walked = config, []
    for part in path.split("."):
        where = ".".join(walked)
        if isinstance(node, config_dict.ConfigDict):
            if part not in node:
                known = sorted(node.keys())
                close = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
                message = f"unknown field {part!r} in {where or 'the config'}"
                if close:
                    return f"{message}; did you mean {close[0]!r}?"
                return f"{message}; its fields are {', '.join(known)}"
            node = node[part]
        else:
            return f"{where} is a value ({node!r}), not a section with a field {part!r}"
        walked.append(part)
    return None


def _field(config, path):
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def _override_error_message(error, argv):
    for name in CONFIG_FLAGS:
        overrides = _overrides(name, argv)
        if not overrides:
            continue
        try:
            config = _load_config(name, argv)
        except Exception as load_error:  # noqa: BLE001  reported in the message
            return f"--{name}: cannot load the config file ({_first_line(load_error)})"
        for flag, path, _ in overrides:
            problem = _unknown_field(config, path)
            if problem:
                return f"--{flag}: {problem}"
    return f"bad flag or config override: {type(error).__name__}: {_first_line(error)}"


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               tuple: "a tuple such as (64, 32)", list: "a list such as [64, 32]"}


def _flag_error_message(error, argv):
    text = str(error)
    if "Error whilst parsing config file" in text:  # the config file's get_config() raised
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f"cannot load the config file: {lines[-1]}"
    match = re.match(r"^flag --([^=\s]+)=(.*?): (.*)$", text, re.DOTALL)
    if not match:
        return _first_line(text) + " (see --helpshort)"
    flag, value, reason = match.group(1), match.group(2), _first_line(match.group(3))
    if "must have a value other than None" in reason:
        return f"--{flag} is required"
    name, _, path = flag.partition(".")
    if path and name in CONFIG_FLAGS and name in FLAGS:
        try:
            current = _field(FLAGS[name].value, path)
        except (KeyError, AttributeError, TypeError, OSError):
            current = None
        if isinstance(current, config_dict.ConfigDict):
            return (f"--{flag}={value}: {path} is a section of the config, not a value; set "
                    f"one of its fields, e.g. --{flag}.{sorted(current.keys())[0]}=...")
        if current is not None:
            wanted = _TYPE_NAMES.get(type(current), type(current).__name__)
            return (f"--{flag}={value}: {path} takes {wanted}, got {value!r} (the config "
                    f"has {current!r})")
    return f"--{flag}={value}: {reason}"


# --- errors inside main ---------------------------------------------------------------------

def command_line():
    """The command this process runs, as a user would type it again."""
    program = sys.argv[0] if sys.argv else "python"
    match = re.search(r"(^|/)tf_lvae/(\w+)\.py$", program)
    head = f"python -m tf_lvae.{match.group(2)}" if match else f"python {program}"
    return " ".join([head, shlex.join(sys.argv[1:])]).strip()


def _storage_error(error):
    """A StorageError for an OSError or TensorFlow error that is a storage fault, else None."""
    from tf_lvae.storage import model_dir as model_dir_lib
    if isinstance(error, model_dir_lib.StorageError):
        return error
    reason = model_dir_lib.storage_fault(error)
    if reason is None:
        return None
    if isinstance(error, OSError):
        what = error.filename or "a file"
    else:  # TensorFlow: "{{function_node ...}} PATH; No space left on device [Op:SaveV2]"
        what = re.sub(r"\{\{.*?\}\}\s*", "", error.message or "").split(";")[0].strip()
    # Raised somewhere unknown: full or read-only means a write, "permission denied" may not.
    writing = (reason in model_dir_lib.OUT_OF_SPACE or
               reason == model_dir_lib.STORAGE_FAULTS[errno.EROFS])
    return model_dir_lib.StorageError(what or "a file", reason,
                                      action="write" if writing else "access")


def _checkpoint_sentence(path):
    """'The last good checkpoint, PATH (2 epochs done), is intact.', read back to be sure."""
    from tf_lvae.storage import checkpoints
    problem = checkpoints.checkpoint_problem(path)
    if problem:
        return (f"The last checkpoint written, {path}, does not read back ({problem}); a "
                "rerun falls back to the one before it.")
    epochs, batches = checkpoints.checkpoint_position(path)
    where = f"{epochs} epoch{'s' * (epochs != 1)}" + (
        f" and {batches} batch{'es' * (batches != 1)}" if batches else "")
    return f"The last good checkpoint, {path} ({where} done), is intact."


def storage_message(error, model_dir=None, after=None, elsewhere="use another --model_dir"):
    """The one-line report of a storage fault: what, why, the last good checkpoint, what next.

    model_dir: the model_dir a trainer was writing; its newest checkpoint is read back to say
    that it is intact (unless `error` already names one). after: what a rerun does.
    elsewhere: how to write somewhere else instead.
    """
    from tf_lvae.storage import checkpoints
    from tf_lvae.storage import model_dir as model_dir_lib
    parts = [f"could not {error.action} {error.what}: {error.reason}."]
    try:  # reporting must not fail on an unreadable folder
        path = error.last_checkpoint or (
            checkpoints.last_good_checkpoint(model_dir)
            if model_dir is not None and os.path.isdir(model_dir) else None)
        sentence = _checkpoint_sentence(path) if path else None
    except Exception:  # noqa: BLE001
        path, sentence = None, None
    if sentence:
        parts.append(sentence)
    elif model_dir is not None:
        parts.append("No checkpoint had been written yet.")
    if model_dir is not None and os.path.isdir(model_dir):
        state = os.path.join(model_dir, model_dir_lib.STATE_FILE)
        if os.path.exists(state):
            try:
                model_dir_lib.read_json(state)
                parts.append(f"{model_dir_lib.STATE_FILE} is valid.")
            except ValueError:
                parts.append(f"{model_dir_lib.STATE_FILE} is unreadable.")
    fix = ("Free some space" if error.out_of_space else
           f"Make the folder writable (or {elsewhere})")
    parts.append(f"{fix}, then rerun the same command" + (f" ({after})" if after else "") +
                 f": {command_line()}")
    return " ".join(parts)


@contextlib.contextmanager
def clear_errors(model_dir=None, after=None, elsewhere="use another --model_dir"):
    """Print expected errors without a traceback, as one `error: ...` line; exit code 2.

    Expected: a bad config, missing data, a bad or busy model_dir, non-finite training, and
    storage faults (no space left, a read-only folder, no permission). For those, model_dir
    (what a trainer writes), after (what rerunning does) and elsewhere (how to write somewhere
    else) complete the message (`storage_message`).
    """
    from tf_lvae import data, experiment_config
    from tf_lvae.training import fault_tolerance
    from tf_lvae.storage import model_dir as model_dir_lib
    import tensorflow as tf
    try:
        yield
    except model_dir_lib.StorageError as error:
        _fail(storage_message(error, model_dir, after, elsewhere))
    except (experiment_config.ConfigError, data.DataNotFoundError,
            model_dir_lib.ModelDirError, ValueError, FileNotFoundError,
            fault_tolerance.NonFiniteTrainingError) as error:
        _fail(str(error))
    except (OSError, tf.errors.OpError) as error:
        storage = _storage_error(error)
        if storage is None:
            raise
        _fail(storage_message(storage, model_dir, after, elsewhere))
