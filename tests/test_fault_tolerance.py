"""Fault tolerance: kill -9 and rerun, non-finite steps, damaged checkpoints, epoch-seeded data.

The kill test runs `training.train` on the default training path (an XLA train step, several
steps per XLA call, the authors' clipping, validation every epoch) in subprocesses: one
uninterrupted, one killed with SIGKILL in the middle of its second epoch and then rerun with the
same arguments. The rerun must end with bitwise the same weights and the same last-epoch
metrics (tolerance: 1e-6 relative; on one CPU the runs are deterministic and we measure exactly
0).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae import data
from tf_lvae import experiment_config
from tf_lvae.training import fault_tolerance
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.configs import base
from tf_lvae.model.spec import ModelSpec
from tf_lvae.storage import checkpoints
from tf_lvae.training import train_step

EXAMPLES, BATCH, EPOCHS, EVERY, PER_CALL = 512, 32, 3, 8, 4
STEPS = EXAMPLES // BATCH            # 16 batches per epoch, 4 XLA calls of 4 steps
KILL_AFTER = STEPS + EVERY           # checkpoints at 8, 16, 24, ...: epoch 2, batch 8
TOLERANCE = 1e-6
SPEC = ModelSpec(image_shape=(28, 28, 1), latent_sizes=(8, 4), hidden_sizes=(32, 16))


def tiny_config():
    config = base.base_config()
    config.model.latent_sizes, config.model.hidden_sizes = (8, 4), (32, 16)
    config.data.max_train_examples = EXAMPLES
    config.data.eval_split = "train"   # a small eval set: checks that L_1 is reproducible too
    config.train.update(epochs=EPOCHS, batch_size=BATCH, warmup_epochs=1, jit_compile=True,
                        eval_every_epochs=1, diagnostics_every_epochs=0, verbose=0,
                        checkpoint_every_steps=EVERY, steps_per_execution=PER_CALL,
                        clip_global_norm=4.0, clip_value=0.9)
    return config


# Runs train(config, model_dir) and writes the final weights and history; SLEEP slows each
# step down (a test harness only) so that the kill lands mid-epoch.
DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import keras, ml_collections, numpy as np
    from absl import logging
    from tf_lvae.training import loop as training
    logging.set_verbosity(logging.INFO)   # as under absl.app: shows "resuming from ..."

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            time.sleep(float(os.environ.get("SLEEP", "0")))

    config = ml_collections.ConfigDict(json.loads(sys.argv[1]))
    model, history = training.train(config, sys.argv[2], extra_callbacks=[Slow()])
    np.savez(sys.argv[3], *[v.numpy() for v in model.weights])
    with open(sys.argv[3] + ".json", "w") as f:
        json.dump(history.history, f)
""")


def _start(config, model_dir, out, sleep=0.0):
    """Popen of the driver; its output goes to out.log (a pipe nobody reads could fill up)."""
    env = dict(os.environ, SLEEP=str(sleep), TF_CPP_MIN_LOG_LEVEL="2")
    with open(f"{out}.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", DRIVER, config.to_json(),
                                    str(model_dir), str(out)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    process.log = f"{out}.log"
    return process


def _output(process):
    with open(process.log) as log:
        return log.read()


def _read(path):
    return path.read_text() if path.exists() else ""


def _finish(process, timeout=300):
    process.wait(timeout=timeout)
    assert process.returncode == 0, _output(process)[-3000:]
    return _output(process)


def _kill_after_checkpoint(victim, checkpoints, step, timeout):
    """SIGKILL `victim` once checkpoint `step` is listed; returns the newest checkpoint's step."""
    deadline = time.time() + timeout
    while f"ckpt-{step}" not in _read(checkpoints / "checkpoint"):  # the manager's list
        assert victim.poll() is None, _output(victim)[-3000:]
        assert time.time() < deadline, "the run to kill wrote no mid-epoch checkpoint"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = tf.train.get_checkpoint_state(str(checkpoints))
    return int(state.model_checkpoint_path.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """(reference dir, resumed dir, rerun output): an uninterrupted run and a killed + rerun one."""
    root = tmp_path_factory.mktemp("kill")
    config = tiny_config()
    reference = _start(config, root / "reference", root / "reference.npz")
    victim = _start(config, root / "resumed", root / "resumed.npz", sleep=0.2)  # per call
    checkpoints = root / "resumed" / model_dir_lib.CHECKPOINT_DIR
    resumed_from = _kill_after_checkpoint(victim, checkpoints, KILL_AFTER, 400)
    assert resumed_from % STEPS, "the kill should land mid-epoch"   # 8 steps to the next save
    output = _finish(_start(config, root / "resumed", root / "resumed.npz"), 600)
    _finish(reference, 600)
    return root, resumed_from, output


def _load(root, name):
    weights = np.load(root / f"{name}.npz")
    history = json.loads((root / f"{name}.npz.json").read_text())
    return [weights[key] for key in weights.files], history


@pytest.mark.slow
def test_run_killed_mid_epoch_and_rerun_ends_like_an_uninterrupted_run(killed_and_resumed):
    root, resumed_from, output = killed_and_resumed
    assert f"resuming from {root / 'resumed' / 'checkpoints'}/ckpt-{resumed_from}" in output
    reference_weights, reference_history = _load(root, "reference")
    weights, history = _load(root, "resumed")
    assert len(weights) == len(reference_weights)
    for ours, theirs in zip(weights, reference_weights):
        np.testing.assert_allclose(ours, theirs, rtol=TOLERANCE, atol=TOLERANCE)
    # The rerun fit the rest of epoch 2 (metrics include the batches done before the kill) and
    # epoch 3; both epochs' training and validation metrics are those of the uninterrupted run.
    assert len(history["loss"]) == 2
    for key in ("loss", "elbo", "kl", "active_units_1", "val_elbo", "val_kl", "skipped_steps"):
        np.testing.assert_allclose(history[key], reference_history[key][1:], rtol=TOLERANCE)
    for name in ("reference", "resumed"):
        state = json.loads((root / name / model_dir_lib.STATE_FILE).read_text())
        assert state["finished"] and state["epochs_completed"] == EPOCHS
        assert state["checkpoint"] == f"ckpt-{EPOCHS * STEPS}"
    kept = sorted(p.name for p in (root / "resumed" / "checkpoints").glob("*.index"))
    assert len(kept) == 3                                        # CheckpointManager keeps 3


def _damage(path, how):
    data_file = tf.io.gfile.glob(path + ".data-*")[0]
    raw = bytearray(open(data_file, "rb").read())
    if how == "truncated":
        raw = raw[:len(raw) // 2]
    else:                                          # flip bytes in the middle: a CRC mismatch
        middle = len(raw) // 2
        raw[middle:middle + 16] = bytes(b ^ 0xFF for b in raw[middle:middle + 16])
    with open(data_file, "wb") as handle:
        handle.write(raw)


def _compiled_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = train_step.build_model(SPEC)
    model.configure_objective(1, 1, 0, noise_seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("how", ["truncated", "corrupted"])
@pytest.mark.slow
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(
        killed_and_resumed, tmp_path, caplog, how):
    model_dir = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0] / "resumed", model_dir)
    paths = tf.train.get_checkpoint_state(str(model_dir / "checkpoints")).all_model_checkpoint_paths
    newest, previous = paths[-1], paths[-2]
    _damage(newest, how)

    model = _compiled_model()
    state = fault_tolerance.TrainingCheckpoint(model, model.optimizer, str(model_dir))
    resume = state.restore()
    assert resume.path == previous
    number = int(previous.rsplit("-", 1)[1])
    assert (resume.epoch, resume.step_in_epoch) == divmod(number, STEPS)
    assert os.path.basename(newest) in caplog.text and "cannot be restored" in caplog.text
    assert "falling back to the previous good checkpoint" in caplog.text
    assert (model_dir / "checkpoints" / "damaged" / (os.path.basename(newest) + ".index")).exists()
    # Evaluation-side loading falls back the same way (and moves nothing).
    loaded, _, epochs = checkpoints.load_model(str(model_dir))
    assert epochs == resume.epoch
    for ours, theirs in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.slow
def test_no_usable_checkpoint_is_a_clear_error(killed_and_resumed, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0] / "resumed", model_dir)
    for path in tf.train.get_checkpoint_state(
            str(model_dir / "checkpoints")).all_model_checkpoint_paths:
        _damage(path, "truncated")
    with pytest.raises(model_dir_lib.ModelDirError, match="no checkpoint could be restored"):
        checkpoints.load_model(str(model_dir))


class RecordSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights, self.iterations, self.skipped = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.weights])
        self.iterations.append(int(self.model.optimizer.iterations.numpy()))
        self.skipped.append(float(logs["skipped_steps"]))


def test_non_finite_batch_is_skipped_counted_and_changes_nothing(tmp_path):
    model = _compiled_model()
    state = fault_tolerance.TrainingCheckpoint(model, model.optimizer, str(tmp_path))
    images = data.load_arrays("binarized_mnist", "test")[0][:3 * BATCH].copy()
    images[BATCH + 3] = np.nan                      # poisons batch 1 of 3
    record = RecordSteps()
    guard = fault_tolerance.ResumableCheckpoint(state, steps_per_epoch=3, epochs=1,
                                                max_consecutive_skips=2)
    history = model.fit(tf.data.Dataset.from_tensor_slices(images).batch(BATCH), verbose=0,
                        callbacks=[guard, record])
    assert record.skipped == [0.0, 1.0, 1.0] and record.iterations == [1, 1, 2]
    for before, after in zip(record.weights[0], record.weights[1]):   # weights, BN statistics
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(a, b) for a, b in zip(record.weights[1], record.weights[2]))
    assert all(np.isfinite(w).all() for w in record.weights[2])
    assert history.history["skipped_steps"] == [1.0]
    assert np.isfinite(history.history["loss"][0])    # the epoch's metrics skip it too
    assert state.latest.endswith("ckpt-3")            # the epoch-end checkpoint was written

    # A run of non-finite steps stops training with an error naming the last good checkpoint.
    poisoned = tf.data.Dataset.from_tensor_slices(np.full_like(images, np.nan)).batch(BATCH)
    with pytest.raises(fault_tolerance.NonFiniteTrainingError,
                       match="2 consecutive training steps.*ckpt-3"):
        model.fit(poisoned, verbose=0, callbacks=[guard])
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)


def test_a_checkpoint_is_never_written_from_non_finite_weights(tmp_path):
    model = _compiled_model()
    state = fault_tolerance.TrainingCheckpoint(model, model.optimizer, str(tmp_path))
    good = state.save(epoch=1, step_in_epoch=0, number=16)
    kernel = model.trainable_weights[0]
    kernel.assign(tf.fill(kernel.shape, np.inf))
    with pytest.raises(fault_tolerance.NonFiniteTrainingError, match=f"non-finite.*{good}"):
        state.save(epoch=2, step_in_epoch=0, number=32)
    assert state.manager.checkpoints == [good]
    # One written behind the guard's back (another tool, a disk glitch) is rejected on restore.
    state.manager.save(checkpoint_number=33)
    fresh = _compiled_model(seed=1)
    restored = fault_tolerance.TrainingCheckpoint(fresh, fresh.optimizer, str(tmp_path))
    assert restored.restore().path == good
    assert all(np.isfinite(v.numpy()).all() for v in fresh.weights)


def test_epoch_datasets_are_pure_functions_of_seed_and_epoch():
    spec = data.get_spec("mnist")                    # dynamic binarization
    grey = np.random.default_rng(0).random((100, 28, 28, 1), dtype=np.float32)

    def epoch(e, seed=3):
        ds = data.make_dataset(grey, spec, 16, shuffle=True, seed=seed, epoch=e,
                               drop_remainder=True)
        return np.concatenate(list(ds.as_numpy_iterator()))

    first, second = epoch(0), epoch(1)
    np.testing.assert_array_equal(first, epoch(0))   # rebuilt in any order, any process
    assert (first != second).mean() > 0.2 and (first != epoch(0, seed=4)).mean() > 0.2
    assert set(np.unique(first)) == {0.0, 1.0}
    skipped = data.make_dataset(grey, spec, 16, shuffle=True, seed=3, epoch=1,
                                drop_remainder=True).skip(2)
    np.testing.assert_array_equal(np.concatenate(list(skipped.as_numpy_iterator())),
                                  second[32:])
    with pytest.raises(ValueError, match="needs an integer seed"):
        data.make_dataset(grey, spec, 16, shuffle=True, seed=None, epoch=0)


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "export"
    with model_dir_lib.atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with model_dir_lib.atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash while exporting")
    assert (target / "a.txt").read_text() == "1"
    with model_dir_lib.atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]   # no leftovers


def test_bad_fault_tolerance_settings_are_rejected():
    config = tiny_config()
    config.train.max_consecutive_skips = 0
    with pytest.raises(ValueError, match="max_consecutive_skips must be an integer >= 1"):
        experiment_config.validate_config(config)
    config = tiny_config()
    config.train.steps_per_execution = 0
    with pytest.raises(ValueError, match="train.steps_per_execution must be an integer >= 1"):
        experiment_config.validate_config(config)
    config = tiny_config()
    config.train.strategy = "horovod"
    with pytest.raises(ValueError, match="train.strategy must be one of default, mirrored"):
        experiment_config.validate_config(config)
