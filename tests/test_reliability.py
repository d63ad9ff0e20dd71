"""Reliability as a user meets it: one trainer per model_dir, storage faults, config typos.

Everything runs the real command lines in fresh processes (`python -m tf_lvae.train ...`):
two trainers on one model_dir, a stale lock left by `kill -9`, a file-size limit
(RLIMIT_FSIZE, works for any user) and a full tmpfs during a checkpoint and during an export,
a read-only and a permission-denied model_dir, and mistyped config overrides. Checks that
need a mount (tmpfs, read-only) or root's capabilities skip, saying why, where not permitted.
"""
import contextlib
import ctypes
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT

EPOCH_STEPS = 16  # 512 examples in batches of 32: checkpoints ckpt-16, ckpt-32, ...
TINY = [f"--config={REPO_ROOT / 'configs' / 'quick.py'}",
        "--config.data.max_train_examples=512", "--config.model.latent_sizes=(8,4)",
        "--config.model.hidden_sizes=(32,16)", "--config.train.batch_size=32",
        "--config.train.eval_every_epochs=0", "--config.train.diagnostics_every_epochs=0",
        "--config.train.verbose=0", "--config.train.jit_compile=False"]
FILE_SIZE_LIMIT = 200_000  # bytes: the JSON files and logs fit, a checkpoint (~690 kB) does not


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _run(*args, preexec_fn=None, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=_env(), timeout=timeout, preexec_fn=preexec_fn)


def _train(model_dir, epochs, **kwargs):
    return _run("tf_lvae.train", *TINY, f"--model_dir={model_dir}", f"--epochs={epochs}",
                **kwargs)


# TensorFlow's native start-up lines (printed whatever TF_CPP_MIN_LOG_LEVEL says) when a
# command imports it before its flags are parsed.
_TF_NATIVE_LOG = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log "
                            r"messages before absl::InitializeLog|To enable the following "
                            r"instructions)")


def _own_lines(text):
    """The lines of stderr that are not TensorFlow's native start-up logging."""
    return [line for line in text.strip().splitlines() if not _TF_NATIVE_LOG.match(line)]


def _error_line(result):
    """The one `error:` line of a failed command; no traceback, exit code 2."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file and folder under `folder`."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            found[os.path.relpath(path, folder)] = (info.st_size if name in files else 0,
                                                    info.st_mtime_ns)
    return found


def _state(model_dir):
    return json.loads((model_dir / "training_state.json").read_text())


def _limit_file_size():
    """preexec_fn: writes past FILE_SIZE_LIMIT fail with EFBIG (Python ignores SIGXFSZ)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def _tiny_config(epochs):
    """The config TINY sets on the command line, for training in this process."""
    from tf_lvae.configs import quick
    config = quick.get_config()
    config.data.max_train_examples = 512
    config.model.latent_sizes, config.model.hidden_sizes = (8, 4), (32, 16)
    config.train.update(epochs=epochs, batch_size=32, eval_every_epochs=0,
                        diagnostics_every_epochs=0, verbose=0, jit_compile=False)
    return config


def _train_here(model_dir, epochs):
    from tf_lvae.training import loop as training
    training.train(_tiny_config(epochs), str(model_dir))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A model_dir trained for one epoch (ckpt-16), to be copied by the tests."""
    model_dir = tmp_path_factory.mktemp("one_epoch") / "model"
    _train_here(model_dir, 1)
    return model_dir


@contextlib.contextmanager
def _tmpfs(path, size):
    """A tmpfs of `size` mounted at `path` (skips where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder, leave):
    """Fill folder's file system until only `leave` bytes are free."""
    stats = os.statvfs(folder)
    with open(folder / "ballast", "wb") as handle:
        handle.write(b"\0" * (stats.f_bavail * stats.f_frsize - leave))


# --- one trainer per model_dir --------------------------------------------------------------

@pytest.mark.slow
def test_a_second_trainer_is_refused_and_the_first_finishes_untouched(tmp_path):
    model_dir = tmp_path / "run"
    # The first trainer starts as a user starts it (no TF_CPP_MIN_LOG_LEVEL), one line an epoch.
    user_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    first = subprocess.Popen([sys.executable, "-m", "tf_lvae.train", *TINY,
                              f"--model_dir={model_dir}", "--epochs=3",
                              "--config.train.verbose=2"], cwd=REPO_ROOT,
                             env=user_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        # Wait until the first trainer holds the lock, then freeze it there so that it is
        # certainly running (and holding the lock) while the second one starts.
        deadline = time.time() + 120
        lock = model_dir / ".lock"
        while not (lock.exists() and f'"pid": {first.pid}' in lock.read_text()):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.time() < deadline, "the first trainer never took the lock"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)
        before = _snapshot(model_dir)
        second = _train(model_dir, 3)
        after = _snapshot(model_dir)
        first.send_signal(signal.SIGCONT)
        line = _error_line(second)
        holder = json.loads(lock.read_text())
        assert f"model_dir {model_dir} is in use" in line
        assert f"pid {first.pid} on host {socket.gethostname()}" in line
        assert f"since {holder['since']}" in line and "tf_lvae.train" in line
        assert after == before  # the second trainer wrote nothing
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    # A quiet start: none of TensorFlow's start-up lines, no INFO of its checkpoint writer.
    noise = [line for line in stderr.splitlines()
             if _TF_NATIVE_LOG.match(line) or "Sharding callback" in line]
    assert noise == [], stderr[-3000:]
    assert "Epoch 3/3" in stdout and "elbo:" in stdout
    state = _state(model_dir)
    assert state["finished"] and state["epochs_completed"] == 3
    assert state["checkpoint"] == f"ckpt-{3 * EPOCH_STEPS}"
    assert not lock.exists()  # released on exit
    assert len(list((model_dir / "logs" / "train").glob("events.out.tfevents.*"))) == 1
    kept = sorted(p.name for p in (model_dir / "checkpoints").glob("*.index"))
    assert kept == [f"ckpt-{n * EPOCH_STEPS}.index" for n in (1, 2, 3)]


HOLD_LOCK = """
import sys, time
from tf_lvae.storage import lock as model_dir_lock
model_dir_lock.hold(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_stale_lock_of_a_killed_trainer_is_taken_over_with_a_note(tmp_path, one_epoch):
    from tf_lvae.storage import lock as model_dir_lock
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch, model_dir)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(model_dir)], env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # While the holder lives, this process is refused too, before anything is written.
        with pytest.raises(model_dir_lock.ModelDirBusyError, match=f"pid {holder.pid} on"):
            model_dir_lock.hold(model_dir)
    finally:
        holder.kill()  # SIGKILL: the lock file stays, naming a dead process
        holder.wait()
    assert model_dir_lock.read_holder(model_dir)["pid"] == holder.pid
    result = _train(model_dir, 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"took over a stale lock of pid {holder.pid} on host" in result.stderr
    assert _state(model_dir)["epochs_completed"] == 2
    assert not (model_dir / ".lock").exists()


def test_a_lock_file_naming_a_dead_pid_is_taken_over(tmp_path, caplog):
    from tf_lvae.storage import lock as model_dir_lock
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (model_dir / ".lock").write_text(f"{gone}\n")  # any text naming a pid
    with model_dir_lock.hold(model_dir, purpose="test"):
        assert f"took over a stale lock of pid {gone} on host ?" in caplog.text
        holder = model_dir_lock.read_holder(model_dir)
        assert holder["pid"] == os.getpid() and holder["purpose"] == "test"
        with model_dir_lock.hold(model_dir):  # re-entrant within one process
            pass
        assert (model_dir / ".lock").exists()
    assert not (model_dir / ".lock").exists()
    assert sorted(os.listdir(model_dir)) == []


def test_a_lock_taken_for_nothing_leaves_no_folder(tmp_path):
    from tf_lvae.storage import lock as model_dir_lock
    model_dir = tmp_path / "a" / "b"
    with model_dir_lock.hold(model_dir):
        assert (model_dir / ".lock").exists()
    assert not (tmp_path / "a").exists()


# --- storage faults -------------------------------------------------------------------------

def _assert_checkpoint_fault(line, model_dir, reason):
    assert f"could not write checkpoint {model_dir}/checkpoints/ckpt-{2 * EPOCH_STEPS}" in line
    assert reason in line
    assert (f"The last good checkpoint, {model_dir}/checkpoints/ckpt-{EPOCH_STEPS} (1 epoch "
            "done), is intact") in line
    assert "rerun the same command" in line
    state = _state(model_dir)  # still valid, and what the last good checkpoint holds
    assert state["epochs_completed"] == 1 and state["checkpoint"] == f"ckpt-{EPOCH_STEPS}"
    leftovers = [p.name for p in (model_dir / "checkpoints").iterdir()
                 if f"ckpt-{2 * EPOCH_STEPS}" in p.name]
    assert leftovers == []
    assert not (model_dir / ".lock").exists()


@pytest.mark.slow
def test_a_file_size_limit_during_a_checkpoint_is_reported_and_resumable(tmp_path, one_epoch):
    model_dir = tmp_path / "run"
    shutil.copytree(one_epoch, model_dir)
    failed = _train(model_dir, 3, preexec_fn=_limit_file_size)
    line = _error_line(failed)
    _assert_checkpoint_fault(line, model_dir, "file too large")
    # What a kill during a save leaves behind is cleared at the next start.
    leftover = model_dir / "checkpoints" / "ckpt-99_temp"
    leftover.mkdir()
    (leftover / "part-00000-of-00001.data-00000-of-00001.tempstate1").write_bytes(b"\0" * 99)
    (model_dir / ".training_state.json.x1y2.tmp").write_text("{")
    # The message's command, rerun as it says, resumes and finishes the run.
    command = shlex.split(line.rsplit(": python -m ", 1)[1])
    assert command[0] == "tf_lvae.train"
    resumed = _run(*command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {model_dir}/checkpoints/ckpt-{EPOCH_STEPS}" in resumed.stderr
    state = _state(model_dir)
    assert state["finished"] and state["epochs_completed"] == 3
    assert not leftover.exists() and not (model_dir / ".training_state.json.x1y2.tmp").exists()


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_reported(tmp_path, one_epoch):
    with _tmpfs(tmp_path / "disk", "4m") as disk:
        model_dir = disk / "run"
        shutil.copytree(one_epoch, model_dir)
        _fill(disk, leave=100_000)
        line = _error_line(_train(model_dir, 3))
        _assert_checkpoint_fault(line, model_dir, "no space left on device")
        assert "Free some space" in line


def _limit_and_drop(drop_dac):
    """preexec_fn: as root, give up overriding file permissions (CAP_DAC_*), as any user."""
    def preexec():
        if drop_dac:
            libc = ctypes.CDLL(None, use_errno=True)
            for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                    os._exit(97)
    return preexec


@pytest.mark.parametrize("how", ["read-only file system", "permission denied"])
@pytest.mark.slow
def test_an_unwritable_model_dir_is_reported_and_left_as_it_was(tmp_path, one_epoch, how):
    preexec_fn = None
    if how == "read-only file system":
        stack = _tmpfs(tmp_path / "disk", "4m")
        disk = stack.__enter__()
        model_dir = disk / "run"
        shutil.copytree(one_epoch, model_dir)
        if subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode != 0:
            stack.__exit__(None, None, None)
            pytest.skip("cannot remount the tmpfs read-only")
    else:
        stack = contextlib.nullcontext()
        model_dir = tmp_path / "run"
        shutil.copytree(one_epoch, model_dir)
        os.chmod(model_dir, 0o555)
        preexec_fn = _limit_and_drop(os.geteuid() == 0)
    try:
        before = _snapshot(model_dir)
        result = _train(model_dir, 3, preexec_fn=preexec_fn)
        if result.returncode == 97:
            pytest.skip("cannot drop root's permission override (no CAP_SETPCAP)")
        line = _error_line(result)
        assert f"could not write model_dir {model_dir} (its lock file .lock): {how}" in line
        assert (f"The last good checkpoint, {model_dir}/checkpoints/ckpt-{EPOCH_STEPS} "
                "(1 epoch done), is intact") in line
        assert "Make the folder writable" in line and "rerun the same command" in line
        assert _snapshot(model_dir) == before
    finally:
        if how == "permission denied":
            os.chmod(model_dir, 0o755)
        stack.__exit__(None, None, None)


@pytest.fixture(scope="module")
def first_export(tmp_path_factory, one_epoch):
    """An export folder holding version 1 of `one_epoch`, to be copied by the tests."""
    from tf_lvae.serving import versioned_export
    export_dir = tmp_path_factory.mktemp("first_export") / "exports"
    versioned_export.export_model_dir(str(one_epoch), str(export_dir))
    return export_dir


def _copy_export(first_export, export_dir):
    shutil.copytree(first_export, export_dir)
    return export_dir / "1"


def _assert_export_fault(result, export_dir, first, reason):
    line = _error_line(result)
    assert f"could not write the export to {export_dir}: {reason}" in line
    assert "nothing was published" in line and "rerun the same command" in line
    assert sorted(p.name for p in export_dir.iterdir()) == [first.name]  # no staging left
    assert (first / "saved_model.pb").exists()


@pytest.mark.slow
def test_a_file_size_limit_during_an_export_publishes_nothing(tmp_path, one_epoch,
                                                              first_export):
    export_dir = tmp_path / "exports"
    first = _copy_export(first_export, export_dir)
    before = _snapshot(export_dir)
    result = _run("tf_lvae.export", f"--model_dir={one_epoch}", f"--export_dir={export_dir}",
                  preexec_fn=_limit_file_size)
    _assert_export_fault(result, export_dir, first, "file too large")
    assert _snapshot(export_dir) == before


@pytest.mark.slow
def test_a_full_disk_during_an_export_publishes_nothing(tmp_path, one_epoch, first_export):
    with _tmpfs(tmp_path / "disk", "3m") as disk:
        export_dir = disk / "exports"
        first = _copy_export(first_export, export_dir)
        _fill(disk, leave=150_000)
        before = _snapshot(export_dir)
        result = _run("tf_lvae.export", f"--model_dir={one_epoch}",
                      f"--export_dir={export_dir}")
        _assert_export_fault(result, export_dir, first, "no space left on device")
        assert _snapshot(export_dir) == before


@pytest.mark.slow
def test_a_storage_fault_stops_a_search_instead_of_failing_every_trial(tmp_path):
    model_dir = tmp_path / "search"
    result = _run("tf_lvae.tune", "--search_space=configs/search_space.py:smoke",
                  f"--model_dir={model_dir}", "--max_trials=3", preexec_fn=_limit_file_size)
    line = _error_line(result)
    assert f"could not write checkpoint {model_dir}/search/trial_0/model/checkpoints/" in line
    assert "file too large" in line and "the search resumes" in line
    assert not (model_dir / "search" / "trial_1").exists()  # stopped at the first trial
    assert not (model_dir / ".lock").exists()


def test_json_writes_keep_the_previous_file_and_no_temporary_one(tmp_path):
    from tf_lvae.storage import model_dir as model_dir_lib
    path = tmp_path / "training_state.json"
    model_dir_lib.write_json_atomically(path, {"epochs_completed": 1})
    code = ("import sys; from tf_lvae.storage import model_dir as m\n"
            "try:\n    m.write_json_atomically(sys.argv[1], {'x': 'y' * 10**6})\n"
            "except m.StorageError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, env=_env(), preexec_fn=_limit_file_size)
    assert result.stdout.strip() == f"could not write {path}: file too large (over the " \
                                    "file-size limit, see `ulimit -f`)", result.stderr[-2000:]
    assert json.loads(path.read_text()) == {"epochs_completed": 1}
    assert sorted(os.listdir(tmp_path)) == ["training_state.json"]


# --- config overrides -----------------------------------------------------------------------

@pytest.mark.parametrize("module, override, message", [
    ("tf_lvae.train", "--config.train.epoch=2",
     "error: --config.train.epoch: unknown field 'epoch' in train; did you mean 'epochs'?"),
    ("tf_lvae.train", "--config.trian.epochs=2",
     "error: --config.trian.epochs: unknown field 'trian' in the config; did you mean "
     "'train'?"),
    ("tf_lvae.train", "--config.train.epochs.max=2",
     "error: --config.train.epochs.max: train.epochs is a value (10), not a section"),
    ("tf_lvae.train", "--config.train.epochs=ten",
     "error: --config.train.epochs=ten: train.epochs takes an integer, got 'ten'"),
    ("tf_lvae.train", "--config.train.learning_rate=fast",
     "error: --config.train.learning_rate=fast: train.learning_rate takes a number, got "
     "'fast'"),
    ("tf_lvae.train", "--config.train.jit_compile=maybe",
     "error: --config.train.jit_compile=maybe: train.jit_compile takes true or false"),
    ("tf_lvae.train", "--config.model.latent_sizes=(8,4",
     "error: --config.model.latent_sizes=(8,4: model.latent_sizes takes a tuple"),
    ("tf_lvae.train", "--config.model.latent_sizes=abc",
     "error: --config.model.latent_sizes=abc: model.latent_sizes takes a tuple of integers"),
    ("tf_lvae.train", "--config.train=3",
     "error: --config.train=3: train is a section of the config, not a value"),
    ("tf_lvae.train", "--epochs=ten", "error: --epochs=ten: invalid literal for int()"),
    ("tf_lvae.tune", "--search_space.hparams.learnig_rate.max=1",
     "error: --search_space.hparams.learnig_rate.max: unknown field 'learnig_rate' in hparams; "
     "did you mean 'learning_rate'?"),
    ("tf_lvae.tune", "--config.train.epoch=2",
     "error: --config.train.epoch: unknown field 'epoch' in train; did you mean 'epochs'?"),
])
def test_config_override_errors_are_one_line_and_write_nothing(tmp_path, module, override,
                                                                message):
    model_dir = tmp_path / "run"
    config = [TINY[0]] if module == "tf_lvae.train" else []
    result = _run(module, *config, f"--model_dir={model_dir}", override)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == ""
    lines = _own_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-3000:]
    assert not model_dir.exists()


def test_a_config_file_that_does_not_load_is_one_line(tmp_path):
    result = _run("tf_lvae.train", f"--config={tmp_path}/nope.py",
                  f"--model_dir={tmp_path}/run")
    lines = _own_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"error: --config={tmp_path}/nope.py: cannot load the config "
                               "file ([Errno 2] No such file or directory")
