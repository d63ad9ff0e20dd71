"""Training a model from a config: data, model, Keras fit with checkpoints and resume.

`train(config, model_dir)` is what `python -m tf_lvae.train` calls; tests call it too. A rerun
with the same model_dir resumes from the latest checkpoint (weights, optimizer state, epoch),
so warm-up and the learning-rate state continue where they stopped.
"""
import os
import pathlib

import keras
from absl import logging

from tf_lvae import data
from tf_lvae import diagnostics
from tf_lvae import experiment_config
from tf_lvae import model_dir as model_dir_lib


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer + epoch counter at the end of every epoch."""

    def __init__(self, checkpoint, manager, model_dir, total_epochs):
        super().__init__()
        self.checkpoint, self.manager = checkpoint, manager
        self.model_dir, self.total_epochs = model_dir, total_epochs

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoint.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        model_dir_lib.write_json_atomically(
            os.path.join(self.model_dir, model_dir_lib.STATE_FILE),
            dict(epochs_completed=epoch + 1, epochs=self.total_epochs,
                 finished=epoch + 1 >= self.total_epochs,
                 last_metrics={k: float(v) for k, v in (logs or {}).items()}))


def _prepare_model_dir(model_dir, config, spec):
    """Create model_dir, or check that an existing one holds the same architecture."""
    path = pathlib.Path(model_dir)
    spec_path = path / model_dir_lib.SPEC_FILE
    if spec_path.exists():
        existing = model_dir_lib.read_spec(model_dir)
        if existing != spec:
            raise model_dir_lib.ModelDirError(
                f"{model_dir} holds a different model ({existing}); the config asks for "
                f"{spec}. Use a new --model_dir.")
    path.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(spec.to_json())
    model_dir_lib.write_json_atomically(path / model_dir_lib.CONFIG_FILE, config.to_dict())


def _load_split(config, split):
    return data.load_arrays(config.data.dataset, split, data_dir=config.data.data_dir,
                            num_validation=experiment_config.num_validation(config))[0]


def train(config, model_dir, extra_callbacks=()):
    """Train (or resume) the model a config describes; returns (model, keras History or None).

    Everything that can be wrong with the config or the data is checked before model_dir is
    touched.
    """
    experiment_config.validate_config(config)
    spec = experiment_config.model_spec(config)
    data_spec = data.get_spec(config.data.dataset)
    train_images = _load_split(config, config.data.train_split)
    eval_every = config.train.eval_every_epochs
    eval_images = _load_split(config, config.data.eval_split) if eval_every else None
    diagnostics_callbacks = diagnostics.from_config(config, model_dir, train_images, eval_images)
    steps_per_epoch = len(train_images) // config.train.batch_size
    if steps_per_epoch < 1:
        raise experiment_config.ConfigError(
            f"train.batch_size={config.train.batch_size} is larger than the "
            f"{len(train_images)} training examples of {config.data.train_split!r}")

    _prepare_model_dir(model_dir, config, spec)
    keras.utils.set_random_seed(config.train.seed)
    model = model_dir_lib.build_model(spec)
    model.configure_objective(config.train.mc_samples, config.train.iw_samples,
                              config.train.warmup_epochs * steps_per_epoch)
    optimizer = keras.optimizers.Adam(config.train.learning_rate,
                                      epsilon=config.train.adam_epsilon)
    model.compile(optimizer=optimizer, jit_compile=config.train.jit_compile)
    optimizer.build(model.trainable_variables)

    checkpoint = model_dir_lib.make_checkpoint(model, optimizer)
    manager = model_dir_lib.checkpoint_manager(checkpoint, model_dir)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_consumed()
        logging.info("resuming from %s (epoch %d)", manager.latest_checkpoint,
                     int(checkpoint.epoch.numpy()))
    initial_epoch = int(checkpoint.epoch.numpy())
    if initial_epoch >= config.train.epochs:
        logging.info("%s already trained for %d epochs; nothing to do", model_dir,
                     initial_epoch)
        return model, None

    train_ds = data.make_dataset(train_images, data_spec, config.train.batch_size,
                                 shuffle=True, seed=config.train.seed, drop_remainder=True)
    eval_ds = (data.make_dataset(eval_images, data_spec, config.eval.batch_size)
               if eval_every else None)
    callbacks = [
        EpochCheckpoint(checkpoint, manager, model_dir, config.train.epochs),
        keras.callbacks.TensorBoard(os.path.join(model_dir, model_dir_lib.LOG_DIR),
                                    write_graph=False),
        *diagnostics_callbacks,
        *extra_callbacks,
    ]
    verbose = config.train.verbose
    history = model.fit(train_ds, epochs=config.train.epochs, initial_epoch=initial_epoch,
                        validation_data=eval_ds, validation_freq=max(eval_every, 1),
                        callbacks=callbacks, verbose=int(verbose) if verbose != "auto" else
                        "auto")
    return model, history
