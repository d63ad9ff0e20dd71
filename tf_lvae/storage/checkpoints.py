"""Checkpoints of a model_dir: how weights are named and saved, and how a model is restored
from the newest checkpoint that reads back whole.

A checkpoint that cannot be read back (truncated or corrupt files, or non-finite values) is
reported and skipped (training moves its files to checkpoints/damaged/); the previous one is used.
"""
import os
import pathlib

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import message

from tf_lvae.model.hierarchical_vae import HierarchicalVAE
from tf_lvae.storage import model_dir as model_dir_lib

DAMAGED_DIR = "damaged"
# What reading a damaged checkpoint raises: TensorFlow errors (data loss, a CRC mismatch, a
# missing file), a short read, an undecodable object graph.
DAMAGE_ERRORS = (tf.errors.OpError, IndexError, message.DecodeError, ValueError)


def weight_key(variable):
    """A weight's Keras path without its first component, the model's auto-generated name,
    which varies between instances: stable for a given ModelSpec."""
    return variable.path.split("/", 1)[1]


def make_checkpoint(model, optimizer=None):
    """The tf.train.Checkpoint of a training run: model, optimizer and epoch counter."""
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # Keras 3 models are not tf.train trackables of their layers: name every weight by its
    # `weight_key` so a checkpoint restores without the optimizer.
    weights = {weight_key(variable): variable for variable in model.weights}
    kwargs = dict(model=weights, epoch=epoch)
    if optimizer is not None:
        kwargs["optimizer"] = optimizer
    return tf.train.Checkpoint(**kwargs)


def check_finite_weights(model):
    """Raise ValueError if any weight of `model` holds a NaN or an infinity."""
    bad = [v.path for v in model.weights if not np.all(np.isfinite(v.numpy()))]
    if bad:
        raise ValueError(f"{len(bad)} weights hold non-finite values (e.g. {bad[0]})")


def checkpoint_problem(path):
    """What is wrong with checkpoint `path`, or None when it is whole.

    Reads every tensor back (TensorFlow verifies each one's CRC32C, so truncated, garbled or
    missing files show up) and checks that floating-point ones are finite. This touches no live
    variable: a restore that failed halfway would leave pending restorations behind.
    """
    try:
        reader = tf.train.load_checkpoint(path)
        for key, dtype in reader.get_variable_to_dtype_map().items():
            value = reader.get_tensor(key)
            if dtype.is_floating and not np.all(np.isfinite(value)):
                return f"{key} holds non-finite values"
    except DAMAGE_ERRORS as error:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
    return None


def restore_newest_valid(checkpoint, paths, damaged_dir=None, partial=False):
    """Restore the newest whole checkpoint of `paths` (oldest first); returns its path.

    Checkpoints with a `checkpoint_problem` are reported and skipped; with damaged_dir their
    files are moved there. partial=True restores only the objects `checkpoint` has (e.g. weights
    without the optimizer). Raises ModelDirError when none is usable; None when paths is empty.
    """
    problems = []
    for path in reversed(list(paths)):
        problem = checkpoint_problem(path)
        if problem is None:
            status = checkpoint.restore(path)
            if partial:
                status.expect_partial().assert_existing_objects_matched()
            else:
                status.assert_consumed()
            if problems:
                logging.warning("falling back to the previous good checkpoint %s (skipped: %s)",
                                path, "; ".join(problems))
            return path
        problems.append(f"{os.path.basename(path)}: {problem}")
        logging.error("checkpoint %s is damaged and cannot be restored: %s", path, problem)
        if damaged_dir is not None:
            _move_checkpoint_files(path, damaged_dir)
    if problems:
        raise model_dir_lib.ModelDirError(
            "no checkpoint could be restored: " + "; ".join(problems) + ". Move the checkpoints "
            "folder away to start training from scratch.")
    return None


def _move_checkpoint_files(prefix, damaged_dir):
    os.makedirs(damaged_dir, exist_ok=True)
    for name in tf.io.gfile.glob(prefix + ".*"):
        os.replace(name, os.path.join(damaged_dir, os.path.basename(name)))
    logging.warning("moved the files of %s to %s", prefix, damaged_dir)


def load_model(model_dir):
    """Rebuild the model of `model_dir` and restore its latest checkpoint's weights.

    Returns (model, config dict, epochs completed): the model a `HierarchicalVAE` (no train
    step). Raises model_dir_lib.ModelDirError when there is no trained checkpoint.
    """
    model_dir = str(model_dir)
    if not os.path.isdir(model_dir):
        raise model_dir_lib.ModelDirError(f"model_dir {model_dir!r} does not exist")
    spec = model_dir_lib.read_spec(model_dir)
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR))
    if state is None or not state.all_model_checkpoint_paths:
        raise model_dir_lib.ModelDirError(
            f"{model_dir} has no trained checkpoint in {model_dir_lib.CHECKPOINT_DIR}/ "
            "(did training run for at least one epoch?)")
    model = HierarchicalVAE.from_spec(spec)
    checkpoint = make_checkpoint(model)
    # The newest checkpoint that reads back whole, with finite values.
    restore_newest_valid(checkpoint, state.all_model_checkpoint_paths, partial=True)
    config = model_dir_lib.read_json(pathlib.Path(model_dir) / model_dir_lib.CONFIG_FILE,
                                     default={})
    return model, config, int(checkpoint.epoch.numpy())


def last_good_checkpoint(model_dir):
    """The newest checkpoint of model_dir that reads back whole, or None. Moves nothing."""
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, model_dir_lib.CHECKPOINT_DIR))
    for path in reversed(list(state.all_model_checkpoint_paths) if state else []):
        if checkpoint_problem(path) is None:
            return path
    return None


def checkpoint_position(path):
    """(epochs done, batches done of the next epoch) saved in checkpoint `path`."""
    reader = tf.train.load_checkpoint(path)
    keys = [f"{name}/.ATTRIBUTES/VARIABLE_VALUE" for name in ("epoch", "step_in_epoch")]
    return tuple(int(reader.get_tensor(key)) if reader.has_tensor(key) else 0 for key in keys)
