"""What a model_dir holds, and how to save and restore a model from it.

    model_dir/
      config.json            the resolved experiment config
      model_spec.json        the architecture (tf_lvae.model.spec.ModelSpec)
      training_state.json    epochs completed, whether training finished
      checkpoints/           tf.train.CheckpointManager (newest 3): model, optimizer, epochs and
                             batches done, metric accumulators (fault_tolerance.TrainingCheckpoint);
                             damaged/ holds checkpoints that failed to restore
      logs/                  TensorBoard scalars (train/ and validation/)
      .lock                  while a trainer owns the model_dir (tf_lvae.storage.lock)

Every file is written whole or not at all (a temporary file renamed into place). A write that
fails for lack of space or permission raises StorageError, naming what could not be written
and why; its temporary file is removed, and `remove_leftovers` clears those of a killed run.
"""
import contextlib
import errno
import json
import os
import pathlib
import re
import shutil
import tempfile

import tensorflow as tf

from tf_lvae.model.spec import ModelSpec

CONFIG_FILE = "config.json"
SPEC_FILE = "model_spec.json"
STATE_FILE = "training_state.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
LOCK_FILE = ".lock"  # tf_lvae.storage.lock


class ModelDirError(ValueError):
    """A model_dir that is missing, incomplete or holds a different model."""


# errno -> the reason a write failed, for the faults of the storage rather than of the program.
STORAGE_FAULTS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (over the file-size limit, see `ulimit -f`)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
OUT_OF_SPACE = {STORAGE_FAULTS[errno.ENOSPC], STORAGE_FAULTS[errno.EDQUOT],
                STORAGE_FAULTS[errno.EFBIG]}


class StorageError(ModelDirError):
    """A file could not be written because of the storage: no space, read-only, no permission.

    `what` names what could not be written (a path, a checkpoint), `reason` says why;
    `last_checkpoint` is the newest good checkpoint when the writer knows it. `action` is
    "write", or "access" for a fault of unknown direction (e.g. permission denied on a read).
    """

    def __init__(self, what, reason, last_checkpoint=None, action="write"):
        self.what, self.reason, self.last_checkpoint = str(what), reason, last_checkpoint
        self.action = action
        message = f"could not {action} {self.what}: {reason}"
        if last_checkpoint:
            message += f" (the last good checkpoint is {last_checkpoint})"
        super().__init__(message)

    @property
    def out_of_space(self):
        return self.reason in OUT_OF_SPACE


def storage_fault(error):
    """The STORAGE_FAULTS reason of an OSError or a TensorFlow error, or None for other errors.

    TensorFlow's file errors (e.g. ResourceExhaustedError from a checkpoint's SaveV2) carry
    the operating system's message, e.g. "...: No space left on device".
    """
    if isinstance(error, OSError):
        return STORAGE_FAULTS.get(error.errno)
    if isinstance(error, tf.errors.OpError):
        text = (error.message or "").lower()
        for number, reason in STORAGE_FAULTS.items():
            if os.strerror(number).lower() in text:
                return reason
        if isinstance(error, tf.errors.PermissionDeniedError):
            return STORAGE_FAULTS[errno.EACCES]
    return None


@contextlib.contextmanager
def storage_errors(what, last_checkpoint=None):
    """Turn a storage fault raised in the block into StorageError(what, reason); others pass."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, tf.errors.OpError) as error:
        reason = storage_fault(error)
        if reason is None:
            raise
        raise StorageError(what, reason, last_checkpoint) from error


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path, write):
    """Call `write(binary_file)` on a temporary file beside `path`, then rename it over:
    `path` is never half a file.

    On a storage fault raises StorageError; `path` keeps its previous content and the
    temporary file is removed.
    """
    path = pathlib.Path(path)
    with storage_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                # mkstemp's 0600 would make config.json etc. private: the umask's usual mode
                os.fchmod(handle.fileno(), 0o666 & ~_umask())
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())  # a full disk fails here, not after the rename
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_text_atomically(path, text):
    """write_atomically of `text` (UTF-8)."""
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomically(path, payload):
    """write_text_atomically of `payload` as indented JSON (StorageError on a storage fault)."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def copy_tree(source, target):
    """Copy the files of model_dir `source` into folder `target`, without its lock file.

    A storage fault raises StorageError (shutil.copytree gathers each file's OSError).
    """
    try:
        shutil.copytree(source, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(LOCK_FILE))
    except shutil.Error as error:
        for _, _, why in error.args[0]:
            for number, reason in STORAGE_FAULTS.items():
                if os.strerror(number) in str(why):
                    raise StorageError(target, reason) from error
        raise


def copy_model_dir(source, target):
    """Copy model_dir `source` to `target`, whole or not at all (see atomic_directory)."""
    with atomic_directory(target) as tmp:
        copy_tree(source, tmp)


@contextlib.contextmanager
def atomic_directory(path):
    """Write a directory (an export, a SavedModel) all at once or not at all.

    Yields a temporary folder beside `path`; when the block finishes it is renamed to `path`.
    An existing `path` is renamed aside first and deleted after (a crash between the two renames
    leaves it as .<name>.old-<pid>). If the block raises, `path` is untouched and the temporary
    folder is deleted; a storage fault raises StorageError.
    """
    path = pathlib.Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.",
                                            suffix=".tmp"))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# What a write killed halfway leaves: write_json_atomically's .<name>.<random>.tmp, a
# checkpoint's ckpt-N_temp/ folder, the checkpoint index's checkpoint.tmp<hex>.
_TEMPORARY = re.compile(r"^\..+\.tmp$")
_CHECKPOINT_TEMPORARY = re.compile(r"^(.+_temp|checkpoint\.tmp[0-9a-f]+)$")
_CHECKPOINT_FILE = re.compile(r"^ckpt-(\d+)\.(index|data-\d+-of-\d+)$")


def remove_leftovers(model_dir):
    """Delete the temporary files of writes that did not finish; returns their names.

    Only for the model_dir's owner (the process holding its lock): model_dir/.<name>.*.tmp,
    checkpoints/ckpt-N_temp/ and checkpoint.tmp*, and the files of a checkpoint newer than
    every one in the checkpoint index (a save that failed before it was recorded).
    """
    root = pathlib.Path(model_dir)
    checkpoints = root / CHECKPOINT_DIR
    removed = []

    def remove(path):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(str(path.relative_to(root)))

    if root.is_dir():
        for path in root.iterdir():
            if _TEMPORARY.match(path.name):
                remove(path)
    if checkpoints.is_dir():
        state = tf.train.get_checkpoint_state(str(checkpoints))
        listed = [int(p.rsplit("-", 1)[1]) for p in
                  (state.all_model_checkpoint_paths if state else [])]
        newest = max(listed, default=-1)
        for path in checkpoints.iterdir():
            match = _CHECKPOINT_FILE.match(path.name)
            if _CHECKPOINT_TEMPORARY.match(path.name) or (
                    match and int(match.group(1)) > newest):
                remove(path)
    return sorted(removed)


def read_json(path, default=None):
    path = pathlib.Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def read_spec(model_dir):
    path = pathlib.Path(model_dir) / SPEC_FILE
    if not path.exists():
        raise ModelDirError(f"{model_dir} is not a tf_lvae model_dir: {SPEC_FILE} is missing "
                            "(train one with `python -m tf_lvae.train --model_dir=...`)")
    return ModelSpec.from_json(path.read_text())
