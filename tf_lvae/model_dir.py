"""What a model_dir holds, and how to save and restore a model from it.

    model_dir/
      config.json            the resolved experiment config
      model_spec.json        the architecture (tf_lvae.model_spec.ModelSpec)
      training_state.json    epochs completed, whether training finished
      checkpoints/           tf.train.CheckpointManager (newest 3): model, optimizer, epochs and
                             batches done, metric accumulators (fault_tolerance.TrainingCheckpoint);
                             damaged/ holds checkpoints that failed to restore
      logs/                  TensorBoard scalars (train/ and validation/)
"""
import contextlib
import json
import os
import pathlib
import shutil
import tempfile

import tensorflow as tf

from tf_lvae import layers
from tf_lvae.model import HierarchicalVAE
from tf_lvae.model_spec import ModelSpec

CONFIG_FILE = "config.json"
SPEC_FILE = "model_spec.json"
STATE_FILE = "training_state.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


class ModelDirError(ValueError):
    """A model_dir that is missing, incomplete or holds a different model."""


def write_json_atomically(path, payload):
    """Write JSON to a temporary file beside `path` and rename it over, never half a file."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_directory(path):
    """Write a directory (an export, a SavedModel) all at once or not at all.

    Yields a temporary folder beside `path`; when the block finishes it is renamed to `path`.
    An existing `path` is renamed aside first and deleted after (a crash between the two renames
    leaves it as .<name>.old-<pid>). If the block raises, `path` is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
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


def read_json(path, default=None):
    path = pathlib.Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def build_model(spec, precision=None):
    """A HierarchicalVAE with every weight created (called once on a zero batch).

    precision: a Keras dtype policy of `layers.PRECISIONS`, or None for Keras' global policy.
    Weights are float32 under every policy, so a checkpoint of a mixed-precision run restores
    into a float32 model.
    """
    with layers.global_dtype_policy(precision):
        model = HierarchicalVAE(spec)
        model(tf.zeros([1, *spec.image_shape]))
    return model


def make_checkpoint(model, optimizer=None):
    """The tf.train.Checkpoint of a training run: model, optimizer and epoch counter."""
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    # Keras 3 models are not tf.train trackables of their layers: name every weight by its
    # Keras path (stable for a given ModelSpec) so a checkpoint restores without the optimizer.
    # The leading component (the model's auto-generated name) varies between instances.
    weights = {variable.path.split("/", 1)[1]: variable for variable in model.weights}
    kwargs = dict(model=weights, epoch=epoch)
    if optimizer is not None:
        kwargs["optimizer"] = optimizer
    return tf.train.Checkpoint(**kwargs)


def read_spec(model_dir):
    path = pathlib.Path(model_dir) / SPEC_FILE
    if not path.exists():
        raise ModelDirError(f"{model_dir} is not a tf_lvae model_dir: {SPEC_FILE} is missing "
                            "(train one with `python -m tf_lvae.train --model_dir=...`)")
    return ModelSpec.from_json(path.read_text())


def load_model(model_dir):
    """Rebuild the model of `model_dir` and restore its latest checkpoint's weights.

    Returns (model, config dict, epochs completed). Raises ModelDirError when there is no
    trained checkpoint.
    """
    model_dir = str(model_dir)
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model_dir {model_dir!r} does not exist")
    spec = read_spec(model_dir)
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, CHECKPOINT_DIR))
    if state is None or not state.all_model_checkpoint_paths:
        raise ModelDirError(f"{model_dir} has no trained checkpoint in {CHECKPOINT_DIR}/ "
                            "(did training run for at least one epoch?)")
    model = build_model(spec)
    checkpoint = make_checkpoint(model)
    # The newest checkpoint that reads back whole, with finite values (imported here because
    # fault_tolerance builds on this module).
    from tf_lvae import fault_tolerance
    fault_tolerance.restore_newest_valid(checkpoint, state.all_model_checkpoint_paths,
                                         partial=True)
    config = read_json(pathlib.Path(model_dir) / CONFIG_FILE, default={})
    return model, config, int(checkpoint.epoch.numpy())
