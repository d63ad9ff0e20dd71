"""One writer per model_dir: an exclusive lock on MODEL_DIR/.lock, held while training.

    with model_dir_lock.ModelDirLock(model_dir) as lock:
        lock.acquire()      # ModelDirBusyError if another process holds it; nothing written
        ...                 # write config, checkpoints, logs
                            # released (and .lock removed) when the block ends

The lock is `fcntl.flock` on an open file, so the kernel drops it when its process dies: a
trainer killed with `kill -9` never leaves a lock that blocks. The file holds who took it
(host, pid, start time in UTC, command) so a refused trainer can name the holder, and it is
deleted on release; a lock file found with a holder in it but no flock on it is therefore the
stale lock of a process that died, taken over with a log note. Within one process the lock is
re-entrant (a reproduction cell holds it while `training.train` takes it again).

Only writers lock (training, tuning, the reproduction grid); readers (evaluate, export,
analyze) never need to: every file is written to a temporary name and renamed into place.
On a file system without flock support (some network file systems) or a URL model_dir
(gs://...), training goes on unlocked with a warning.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import socket
import threading

from absl import logging

from tf_lvae.storage import model_dir as model_dir_lib

LOCK_FILE = model_dir_lib.LOCK_FILE
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)

_held = {}  # realpath -> [fd, count, directories this process created] (re-entrancy)
_held_mutex = threading.Lock()


class ModelDirBusyError(model_dir_lib.ModelDirError):
    """Another process holds the model_dir's lock (another trainer is writing it)."""


def _describe(holder):
    if not holder:
        return "a process that has not written its name into the lock file"
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"]
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    text = ", ".join(parts)
    if holder.get("command"):
        text += f", running `{holder['command']}`"
    return text


def read_holder(model_dir):
    """Who the lock file says holds (or last held) the lock: a dict, or None without one.

    Reads the JSON this module writes; a file with anything else naming a pid (e.g. "1234")
    gives {"pid": 1234}.
    """
    path = os.path.join(model_dir, LOCK_FILE)
    try:
        with open(path) as handle:
            text = handle.read(65536)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _parse_holder(text)


def _parse_holder(text):
    if not text.strip():
        return None
    try:
        holder = json.loads(text)
        if isinstance(holder, dict):
            return holder
    except ValueError:
        pass
    match = re.search(r"\d+", text)
    return {"pid": int(match.group())} if match else {"unreadable": text.strip()[:80]}


def _pid_running(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def _holder_record(purpose):
    from tf_lvae import cli  # the command as typed: python -m tf_lvae.train ...
    return dict(pid=os.getpid(), host=socket.gethostname(), purpose=purpose,
                since=datetime.datetime.now(datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"),
                command=cli.command_line()[:500])


def _missing_directories(path):
    """The directories os.makedirs(path) would create, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_empty(directories):
    """rmdir each of `directories` (deepest first) that nothing was written into."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except OSError:
            break


class ModelDirLock:
    """The exclusive lock of one model_dir; `acquire` takes it, leaving the block releases it.

    Args:
      model_dir: the folder to own (created if missing; removed again on release if the
        owner wrote nothing into it).
      purpose: what the holder does, recorded for the refusal message ("training", ...).
    """

    def __init__(self, model_dir, purpose="training"):
        self.model_dir, self.purpose = os.fspath(model_dir), purpose
        self.path = os.path.join(self.model_dir, LOCK_FILE)
        self._key = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False

    @property
    def held(self):
        return self._key is not None

    def acquire(self):
        """Take the lock (or re-enter it in this process); returns self.

        Raises ModelDirBusyError naming the holder if another process has it, before
        anything is written; StorageError if the model_dir cannot be written at all.
        """
        if self._key is not None:
            return self
        if "://" in self.model_dir:
            logging.warning("model_dir %s is a URL: it cannot be locked, make sure no other "
                            "trainer writes it", self.model_dir)
            return self
        with _held_mutex:
            key = os.path.realpath(self.model_dir)
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            created = _missing_directories(self.model_dir)
            try:
                with model_dir_lib.storage_errors(f"model_dir {self.model_dir} (its lock file "
                                                  f"{LOCK_FILE})"):
                    os.makedirs(self.model_dir, exist_ok=True)
                    fd = self._lock_file()
            except BaseException:
                _remove_empty(created)
                raise
            if fd is None:
                return self
            _held[key] = [fd, 1, created]
            self._key = key
        return self

    def _lock_file(self):
        """Open and flock the lock file, write this process into it; its fd (None: no flock)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _parse_holder(os.pread(fd, 65536, 0).decode(errors="replace"))
                os.close(fd)
                purpose = (holder or {}).get("purpose", "training")
                raise ModelDirBusyError(
                    f"model_dir {self.model_dir} is in use: another process holds its lock "
                    f"for {purpose} ({_describe(holder)}). Only one trainer may write a "
                    "model_dir at a "
                    "time: wait for it to finish or stop it, or use another --model_dir "
                    "(evaluate, export and analyze need no lock)") from None
            except OSError as error:
                os.close(fd)
                if error.errno not in _UNSUPPORTED:
                    raise
                logging.warning("the file system of %s does not support locks (%s): make "
                                "sure no other trainer writes it", self.model_dir, error)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                return None
            # The holder may have released and deleted the file between our open and flock:
            # then we locked a file nobody else will look at; open the current one again.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            opened = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (
                    opened.st_ino, opened.st_dev):
                break
            os.close(fd)
        try:
            self._take_over(_parse_holder(os.pread(fd, 65536, 0).decode(errors="replace")))
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_holder_record(self.purpose)) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            self._unlock(fd)
            raise
        return fd

    def _take_over(self, previous):
        if not previous:
            return
        pid = previous.get("pid")
        same_host = previous.get("host") in (None, socket.gethostname())
        if same_host and pid is not None and pid != os.getpid() and _pid_running(pid):
            how = "that pid is running but does not hold the lock (a reused pid)"
        else:
            how = "that process ended without releasing it (e.g. killed)"
        logging.warning("took over a stale lock of %s in %s: %s", _describe(previous),
                        self.model_dir, how)

    def _unlock(self, fd):
        # Delete before unlocking: a process waiting on this file then sees it is stale.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    def release(self):
        """Release the lock (the last re-entrant holder of this process deletes .lock)."""
        if self._key is None:
            return
        key, self._key = self._key, None
        with _held_mutex:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
            fd, _, created = entry
            self._unlock(fd)
            _remove_empty(created)


def hold(model_dir, purpose="training"):
    """The lock of model_dir, taken: `with hold(model_dir): ...` owns it for the block."""
    return ModelDirLock(model_dir, purpose).acquire()
