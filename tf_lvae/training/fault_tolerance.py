"""Surviving crashes and bad steps: resumable checkpoints, damaged-checkpoint fallback, and the
non-finite step policy.

Checkpoints (tf.train.CheckpointManager in model_dir/checkpoints, the newest 3 kept) are written
every `train.checkpoint_every_steps` steps and at the end of every epoch. Each holds the weights,
the optimizer state, the position in training (epochs done, batches done of the current epoch)
and the current epoch's metric accumulators. As with keras.callbacks.BackupAndRestore, rerunning
the same command resumes from the newest one, mid-epoch too: epoch e's batches are rebuilt from
(seed, e) (`data.make_dataset(epoch=e)`), the batches already trained on are skipped, and the
posterior noise is keyed by the optimizer step, so a run killed at any moment and rerun ends
with the weights and metrics of an uninterrupted one, losing only the steps since the last
checkpoint.

A checkpoint that cannot be read back (truncated or corrupt files, or non-finite values) is
reported, moved to checkpoints/damaged/, and the previous one is used. A step whose loss or
gradients are not finite is skipped by the train step and counted in `skipped_steps`; after
`train.max_consecutive_skips` such steps in a row training stops with NonFiniteTrainingError
naming the last good checkpoint. A checkpoint is never written from non-finite weights.

A checkpoint or state file that cannot be written (no space left, a read-only folder, no
permission) raises model_dir.StorageError naming it and the last good checkpoint, which is
intact: a failed save leaves no new entry in the checkpoint index, training_state.json keeps
its previous content, and the save's temporary files are deleted (a killed run's at the next
start).
"""
import collections
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_lvae.training import distribute
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.storage import checkpoints

# Where training stands: epochs done, batches done of epoch `epoch`, and the checkpoint read.
Resume = collections.namedtuple("Resume", ["epoch", "step_in_epoch", "path"])


class NonFiniteTrainingError(FloatingPointError):
    """Training produced non-finite values it cannot skip past."""


class TrainingCheckpoint:
    """The resumable state of a training run and its CheckpointManager.

    Holds model weights, optimizer, `epoch` (epochs done), `step_in_epoch` (batches of the next
    epoch done) and the metric accumulators. `write_dir` (default: model_dir/checkpoints) is
    where saves go: a scratch folder on non-chief workers, which read the chief's checkpoints.
    """

    def __init__(self, model, optimizer, model_dir, write_dir=None, max_to_keep=3):
        self.model, self.optimizer = model, optimizer
        self.read_dir = os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR)
        self.is_writer = write_dir is None
        self.write_dir = write_dir or self.read_dir
        self.checkpoint = checkpoints.make_checkpoint(model, optimizer)
        self.checkpoint.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                                    name="step_in_epoch")
        self.metric_variables = {f"{metric.name}/{variable.name}": variable
                                 for metric in model.metrics for variable in metric.variables}
        self.checkpoint.metrics = self.metric_variables
        if self.is_writer:  # what a save that failed or was killed left behind
            removed = model_dir_lib.remove_leftovers(model_dir)
            if removed:
                logging.info("removed the leftovers of unfinished writes: %s",
                             ", ".join(removed))
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir,
                                                  max_to_keep=max_to_keep)
        self.latest = None  # the newest checkpoint known good: restored or written

    def restore(self):
        """Restore the newest good checkpoint; Resume(epoch, step_in_epoch, path) or None."""
        state = tf.train.get_checkpoint_state(self.read_dir)
        paths = list(state.all_model_checkpoint_paths) if state else []
        damaged = os.path.join(self.read_dir, checkpoints.DAMAGED_DIR) if self.is_writer else None
        path = checkpoints.restore_newest_valid(self.checkpoint, paths, damaged)
        if path is None:
            return None
        self.latest = path
        resume = Resume(int(self.checkpoint.epoch.numpy()),
                        int(self.checkpoint.step_in_epoch.numpy()), path)
        logging.info("resuming from %s: %d epochs and %d batches done", path, resume.epoch,
                     resume.step_in_epoch)
        return resume

    def restore_metrics(self, path):
        """Reload the metric accumulators saved in `path` (fit resets them every epoch)."""
        tf.train.Checkpoint(metrics=self.metric_variables).read(path).expect_partial()

    def save(self, epoch, step_in_epoch, number):
        """Write checkpoint `number` at (epochs done, batches done); refuses non-finite weights."""
        try:
            checkpoints.check_finite_weights(self.model)
        except ValueError as error:
            raise NonFiniteTrainingError(
                f"not writing a checkpoint at epoch {epoch}, batch {step_in_epoch}: {error}. "
                f"The last good checkpoint is {self.latest or '(none written yet)'}.") from None
        self.checkpoint.epoch.assign(epoch)
        self.checkpoint.step_in_epoch.assign(step_in_epoch)
        prefix = os.path.join(self.write_dir, f"ckpt-{number}")
        try:
            with model_dir_lib.storage_errors(f"checkpoint {prefix} (epoch {epoch}, batch "
                                              f"{step_in_epoch})", self.latest):
                self.latest = self.manager.save(checkpoint_number=number)
        except model_dir_lib.StorageError:
            self._remove_unfinished(prefix)
            raise
        return self.latest

    def _remove_unfinished(self, prefix):
        """Delete what a failed save of `prefix` wrote (the index does not list it)."""
        if prefix in self.manager.checkpoints:
            return
        shutil.rmtree(prefix + "_temp", ignore_errors=True)
        for name in tf.io.gfile.glob(prefix + ".*"):
            try:
                os.remove(name)
            except OSError:
                pass

    def close(self):
        if not self.is_writer:  # a non-chief worker's scratch copies
            shutil.rmtree(self.write_dir, ignore_errors=True)


def _scalar(value):
    return float(np.ravel(np.asarray(value))[0])


class ResumableCheckpoint(keras.callbacks.Callback):
    """Checkpoints every `every_steps` steps and every epoch; stops on runs of skipped steps.

    `resume` (from TrainingCheckpoint.restore) tells the epoch where fit starts mid-epoch:
    its batch numbers are offset by the batches already done, and its metric accumulators are
    reloaded. `state_file` (None on non-chief workers) gets the progress as JSON.
    """

    def __init__(self, state, steps_per_epoch, epochs, every_steps=0, max_consecutive_skips=10,
                 resume=None, state_file=None):
        super().__init__()
        self.state, self.steps_per_epoch, self.epochs = state, steps_per_epoch, epochs
        self.every_steps, self.max_consecutive_skips = every_steps, max_consecutive_skips
        self.resume, self.state_file = resume, state_file
        self.consecutive_skips, self.total_skips = 0, 0
        self._epoch, self._offset, self._skips_seen, self._last_step = 0, 0, 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._offset = epoch, 0
        if self.resume and self.resume.epoch == epoch and self.resume.step_in_epoch:
            self._offset = self.resume.step_in_epoch
            self.state.restore_metrics(self.resume.path)
        self.resume = None
        skips = self.model.get_metrics_result().get("skipped_steps")
        self._skips_seen = 0.0 if skips is None else _scalar(skips)
        self._last_step = epoch * self.steps_per_epoch + self._offset

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1 Keras calls this once per call, `batch` being its last.
        step_in_epoch = self._offset + batch + 1
        if logs and "skipped_steps" in logs:
            self._count_skips(_scalar(logs["skipped_steps"]), step_in_epoch)
        step, previous = self._epoch * self.steps_per_epoch + step_in_epoch, self._last_step
        self._last_step = step
        if (self.every_steps and step // self.every_steps > previous // self.every_steps
                and step_in_epoch < self.steps_per_epoch):  # the epoch end saves anyway
            self._save(self._epoch, step_in_epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0, logs)

    def _count_skips(self, skips_this_epoch, step_in_epoch):
        new = skips_this_epoch - self._skips_seen
        self._skips_seen = skips_this_epoch
        if new <= 0:
            self.consecutive_skips = 0
            return
        self.consecutive_skips += int(round(new))
        self.total_skips += int(round(new))
        logging.warning("epoch %d, batch %d: non-finite loss or gradients, step skipped "
                        "(%d in a row)", self._epoch + 1, step_in_epoch, self.consecutive_skips)
        if self.consecutive_skips >= self.max_consecutive_skips:
            self.model.stop_training = True
            raise NonFiniteTrainingError(
                f"{self.consecutive_skips} consecutive training steps had a non-finite loss or "
                f"gradients (the last at epoch {self._epoch + 1}, batch {step_in_epoch}); "
                "stopping. Skipped steps change no weights; the last good checkpoint is "
                f"{self.state.latest or '(none written yet)'}. Lower train.learning_rate, check "
                "the data, or raise train.max_consecutive_skips.")

    def _save(self, epoch, step_in_epoch, logs=None):
        number = epoch * self.steps_per_epoch + step_in_epoch
        path = self.state.save(epoch, step_in_epoch, number)
        if self.state_file is None:
            return
        record = model_dir_lib.read_json(self.state_file, default={})
        record.update(epochs_completed=epoch, step_in_epoch=step_in_epoch, epochs=self.epochs,
                      finished=epoch >= self.epochs, checkpoint=os.path.basename(path),
                      skipped_steps=record.get("skipped_steps", 0) + self.total_skips)
        self.total_skips = 0
        if logs:
            record["last_metrics"] = {k: _scalar(v) for k, v in logs.items()}
        try:
            model_dir_lib.write_json_atomically(self.state_file, record)
        except model_dir_lib.StorageError as error:  # the checkpoint itself was written
            raise model_dir_lib.StorageError(error.what, error.reason, path) from error


def steps_per_call(requested, steps_per_epoch, steps_done=0):
    """The train steps per call into TensorFlow (Keras' steps_per_execution) to use.

    Keras runs whole calls even across an epoch's end, so a call must divide the epoch's
    steps, and, when resuming mid-epoch, the steps still to go: the largest such divisor not
    above `requested`. Checkpoints are then written at call ends only.
    """
    for size in range(max(1, min(requested, steps_per_epoch)), 0, -1):
        if steps_per_epoch % size == 0 and steps_done % size == 0:
            return size
    return 1


def fit_resumable(model, epoch_dataset, resume, epochs, steps_per_epoch, **fit_kwargs):
    """model.fit over the epochs left, starting where `resume` says (None: from scratch).

    epoch_dataset(e) returns the batches of epoch e (e an int or an int64 scalar tensor). A
    partly done epoch is fit on its own (its dataset minus the batches done), then the other
    epochs in one fit over their concatenation. Returns the merged keras History.
    """
    start, done = (resume.epoch, resume.step_in_epoch) if resume else (0, 0)
    fit_kwargs.setdefault("shuffle", False)  # epoch_dataset(e) is shuffled by (seed, e) already
    histories = []
    if done and start < epochs:
        partial = distribute.shard_by_data(epoch_dataset(start).skip(done))
        histories.append(model.fit(partial, initial_epoch=start, epochs=start + 1,
                                   **fit_kwargs))
        start += 1
    if start < epochs and not model.stop_training:
        rest = distribute.shard_by_data(
            tf.data.Dataset.range(start, epochs).flat_map(epoch_dataset))
        histories.append(model.fit(rest, initial_epoch=start, epochs=epochs,
                                   steps_per_epoch=steps_per_epoch, **fit_kwargs))
    return _merge_histories(histories)


def _merge_histories(histories):
    if not histories:
        return None
    merged = histories[-1]
    for earlier in reversed(histories[:-1]):
        merged.epoch = list(earlier.epoch) + list(merged.epoch)
        for key, values in earlier.history.items():
            merged.history[key] = list(values) + list(merged.history.get(key, []))
    return merged
