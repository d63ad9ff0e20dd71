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
import tempfile

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
    define_shortcut_flags()
    flags.DEFINE_string("model_dir", "runs/default", "Where checkpoints, logs and the config "
                        "go; rerunning with the same model_dir resumes.")
    flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker", "tpu"],
                      "tf.distribute strategy (shortcut for --config.train.strategy): mirrored "
                      "= all local GPUs, multi_worker = the cluster in TF_CONFIG; batch_size "
                      "stays the global batch.")


def define_shortcut_flags(search=False):
    """The shortcut flags train and tune share, with the same meaning (search: tune's help,
    where they hold for every trial); `shortcuts()` reads them."""
    trials = " in every trial" if search else ""
    flags.DEFINE_string("dataset", None, "Data set: mnist, binarized_mnist, omniglot, norb, "
                        "fashion_mnist, mnist_dequantized (default: the config's).")
    flags.DEFINE_string("data_dir", None, "Folder with the data set's original files (works "
                        "offline).")
    flags.DEFINE_integer("epochs", None, "Epochs per trial (shortcut for "
                         "--search_space.trial.epochs)." if search else
                         "Shortcut for --config.train.epochs.")
    flags.DEFINE_enum("model", None, ["lvae", "vae"], f"Shortcut for "
                      f"--config.model.inference{trials}.")
    flags.DEFINE_integer("layers", None, f"Keep the bottom N stochastic layers of "
                         f"64-32-16-8-4{trials}.")
    flags.DEFINE_integer("batch_size", None, f"Shortcut for --config.train.batch_size{trials}.")


def shortcuts():
    """{name: value} of the shortcut flags (None: not given), as apply_shortcuts takes them."""
    return {name: FLAGS[name].value
            for name in ("dataset", "data_dir", "epochs", "model", "layers", "batch_size")}


def resolved_config():
    """The frozen `experiment_config.Experiment` of --config, its overrides and the shortcut
    flags (resolved once, here; the library takes it as it is)."""
    from tf_lvae import experiment_config
    config = FLAGS.config
    with config.unlocked():
        experiment_config.apply_shortcuts(config, **shortcuts())
        if FLAGS.strategy is not None:
            config.train.strategy = FLAGS.strategy
    return experiment_config.resolve(config)


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# --- flags and config overrides -------------------------------------------------------------

def run(main, define_flags=None, load_tensorflow_first=True):
    """absl's app.run(main), with flag and config-override errors as one `error:` line (exit 2).

    define_flags: defines the entry point's flags; a config-file flag parses its default file
    (and the overrides on the command line) already when it is defined.
    load_tensorflow_first: TensorFlow loads (quietly) before main; False: main loads it itself
    inside `loading_tensorflow()`, after the checks that need no TensorFlow.
    """
    global _QUIET
    _QUIET = "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # set: the user's level, unfiltered
    if _QUIET:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = DEFAULT_TF_LOG_LEVEL
    with _flag_errors(sys.argv), loading_tensorflow():
        if define_flags is not None:
            define_flags()  # a config file may import TensorFlow

    def main_after_start_up(argv):
        if load_tensorflow_first:
            with loading_tensorflow():
                import tensorflow  # noqa: F401  main uses it; its start-up lines come now
        return main(argv)

    # TensorFlow's own INFO lines ("Sharding callback duration ...") are not the user's news;
    # its warnings and errors, and every line of tf_lvae's, still show.
    absl_logging.get_absl_handler().addFilter(_no_library_info)
    app.run(main_after_start_up, flags_parser=parse_flags)


# --- TensorFlow's start-up lines ------------------------------------------------------------
# While it loads, TensorFlow 2.21 prints to stderr before its C++ logging reads
# TF_CPP_MIN_LOG_LEVEL, so that level does not hide these lines:
#   WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
#   I0000 00:00:... port.cc:153] oneDNN custom operations are on. ...
#   I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers on your machine, ...
#   E0000 00:00:... cuda_platform.cc:52] failed call to cuInit: ... (303)
# The CLIs point file descriptor 2 at a file while TensorFlow loads and finds its devices, then
# write back every captured line but those below the C++ level, as TensorFlow would have. The
# level is DEFAULT_TF_LOG_LEVEL unless the user set TF_CPP_MIN_LOG_LEVEL (0 shows everything);
# at the default, cuInit failing where the CUDA stub found no driver (a CPU-only machine) is
# expected and hidden too. If TensorFlow fails to load, every captured line is written back.

DEFAULT_TF_LOG_LEVEL = "2"  # C++ logging: 0 all, 1 no INFO, 2 no WARNING either, 3 nothing
_SEVERITIES = "IWEF"  # absl's line prefixes, by level
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]]*\] ")
_PRE_INIT_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"
_NO_CUDA_DRIVER = "Could not find cuda drivers"
_CUINIT_FAILED = "failed call to cuInit"
_QUIET = False  # run() sets it: TF_CPP_MIN_LOG_LEVEL was not the user's


@contextlib.contextmanager
def loading_tensorflow():
    """Hold back TensorFlow's start-up lines (above) if TensorFlow loads inside the block."""
    if "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    captured = tempfile.TemporaryFile()
    os.dup2(captured.fileno(), 2)
    try:
        yield
        if "tensorflow" in sys.modules:  # finding the devices prints cuInit's line
            sys.modules["tensorflow"].config.list_physical_devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
        captured.close()
        if "tensorflow" in sys.modules:
            text = without_start_up_lines(text, os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"),
                                          _QUIET)
        sys.stderr.write(text)
        sys.stderr.flush()


def without_start_up_lines(text, level, expected_cuinit=False):
    """`text` (captured stderr) less the C++ log lines below `level` (TF_CPP_MIN_LOG_LEVEL)
    and, if expected_cuinit and the CUDA stub found no driver, the failed cuInit."""
    level = int(level) if str(level).strip().isdigit() else 0
    no_driver = expected_cuinit and _NO_CUDA_DRIVER in text
    kept = []
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match and (_SEVERITIES.index(match.group(1)) < level
                      or (no_driver and _CUINIT_FAILED in line)):
            continue
        if level > 0 and line.startswith(_PRE_INIT_BANNER):
            continue
        kept.append(line)
    return "".join(kept)


_LIBRARIES = ("tensorflow", "keras", "tf_keras", "tensorflow_datasets", "h5py")


# TensorFlow's notes that a call of tf_lvae's uses a deprecated API ("From .../versioned_export
# .py:127: load (from tensorflow.python.saved_model.loader_impl) is deprecated ..."): news for
# tf_lvae's developers (tests and the Python API still show them), not for a CLI's user.
_DEPRECATION_NOTES = os.path.join("tensorflow", "python", "util", "deprecation.py")


def _no_library_info(record):
    """logging filter: False for INFO and DEBUG records logged by TensorFlow or Keras code
    (their own logger, or absl.logging called from their files), and for TensorFlow's
    deprecation notes."""
    parts = set(re.split(r"[\\/]", record.pathname or ""))
    library = (record.name.split(".", 1)[0] in _LIBRARIES
               or ("site-packages" in parts and parts & set(_LIBRARIES)))
    if library and (record.pathname or "").endswith(_DEPRECATION_NOTES):
        return False
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
    try:
        yield
    except Exception as error:  # noqa: BLE001  sorted below; the unexpected ones re-raised
        message = _expected_error_message(error, model_dir, after, elsewhere)
        if message is None:
            raise
        _fail(message)


def _loaded(module, name):
    """Class `name` of `module` if that module is loaded, else None: an error raised by code
    that never loaded (TensorFlow, say) cannot be of its classes, and clear_errors must not
    load TensorFlow to find out."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name) if loaded is not None else None


def _expected_error_message(error, model_dir, after, elsewhere):
    """clear_errors' `error: ...` text for an expected error, None for any other."""
    from tf_lvae import experiment_config
    from tf_lvae.data import registry
    storage_error = _loaded("tf_lvae.storage.model_dir", "StorageError")
    if storage_error is not None and isinstance(error, storage_error):
        return storage_message(error, model_dir, after, elsewhere)
    expected = [experiment_config.ConfigError, registry.DataNotFoundError, ValueError,
                FileNotFoundError, _loaded("tf_lvae.storage.model_dir", "ModelDirError"),
                _loaded("tf_lvae.training.fault_tolerance", "NonFiniteTrainingError")]
    if isinstance(error, tuple(kind for kind in expected if kind is not None)):
        return str(error)
    tf = sys.modules.get("tensorflow")
    if isinstance(error, (OSError,) + ((tf.errors.OpError,) if tf is not None else ())):
        storage = _storage_error(error)
        if storage is not None:
            return storage_message(storage, model_dir, after, elsewhere)
    return None
