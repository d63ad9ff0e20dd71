"""Training a model from a config: data, model, Keras fit with checkpoints and resume.

`train(config, model_dir)` is what `python -m tf_lvae.train` calls; tests call it too. A rerun
with the same model_dir resumes from the latest checkpoint (weights, optimizer state, epoch and
batch within it), so warm-up, the data order and the noise continue where they stopped
(fault_tolerance.py). `config.train.strategy` picks a tf.distribute strategy (distribute.py).
"""
import json
import os
import pathlib

import keras
import tensorflow as tf
from absl import logging

from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae import data
from tf_lvae.training import diagnostics
from tf_lvae.training import distribute
from tf_lvae import experiment_config
from tf_lvae.training import fault_tolerance
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.storage import lock as model_dir_lock
from tf_lvae.training import progress
from tf_lvae.storage import checkpoints
from tf_lvae.training import train_step


def _prepare_model_dir(model_dir, experiment):
    """Create model_dir, or check that an existing one holds the same architecture."""
    spec = experiment.model
    path = pathlib.Path(model_dir)
    spec_path = path / model_dir_lib.SPEC_FILE
    if spec_path.exists():
        existing = model_dir_lib.read_spec(model_dir)
        if existing != spec:
            raise model_dir_lib.ModelDirError(
                f"{model_dir} holds a different model ({existing}); the config asks for "
                f"{spec}. Use a new --model_dir.")
    path.mkdir(parents=True, exist_ok=True)
    # Atomic like every file of a model_dir: a kill mid-write must not break the next resume.
    model_dir_lib.write_json_atomically(spec_path, json.loads(spec.to_json()))
    model_dir_lib.write_json_atomically(path / model_dir_lib.CONFIG_FILE, experiment.to_dict())


def _load_split(data_settings, split):
    return data.load_arrays(data_settings.dataset, split, data_dir=data_settings.data_dir,
                            num_validation=data_settings.validation_size)[0]


def learning_rate_schedule(learning_rate, decay_factor=1.0, decay_every_steps=0):
    """The learning rate, times decay_factor every decay_every_steps optimizer steps (the
    paper's fine-tuning: x0.75 every 200 epochs); a function of optimizer.iterations, so it
    resumes with the checkpointed optimizer. decay_every_steps=0: constant."""
    if decay_every_steps <= 0 or decay_factor == 1.0:
        return learning_rate
    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=decay_every_steps, decay_rate=decay_factor, staircase=True)


def make_optimizer(learning_rate=1e-3, epsilon=1e-4, precision="float32"):
    """The training optimizer: Adam, loss-scaled under mixed_float16 (float16 gradients
    underflow without it). learning_rate: a float or a `learning_rate_schedule`."""
    optimizer = keras.optimizers.Adam(learning_rate, epsilon=epsilon)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _check_init_from(init_from, spec):
    """train.init_from must be a model_dir with a checkpoint of the same architecture."""
    existing = model_dir_lib.read_spec(init_from)
    if existing != spec:
        raise model_dir_lib.ModelDirError(
            f"train.init_from={init_from} holds a different model ({existing}); this config "
            f"builds {spec}")
    if tf.train.get_checkpoint_state(os.path.join(init_from, model_dir_lib.CHECKPOINT_DIR)) is None:
        raise model_dir_lib.ModelDirError(f"train.init_from={init_from} has no checkpoint")


def _restore_weights(model, init_from):
    """Every weight (BatchNorm statistics included) of init_from's newest valid checkpoint;
    the optimizer, epoch counter and warm-up start afresh."""
    source, _, epochs = checkpoints.load_model(init_from)
    values = {checkpoints.weight_key(v): v for v in source.weights}
    for variable in model.weights:
        variable.assign(values[checkpoints.weight_key(variable)])
    return epochs


def train(config, model_dir, extra_callbacks=()):
    """Train (or resume) the model a config describes; returns (model, keras History or None).

    config: an `experiment_config.Experiment`, or a ConfigDict / dict it resolves from.

    Everything that can be wrong with the config or the data is checked before model_dir is
    touched. The chief holds model_dir's lock throughout (model_dir_lock.py): a second trainer
    is refused with ModelDirBusyError before it writes anything.
    """
    experiment = experiment_config.resolve(config)
    with model_dir_lock.ModelDirLock(model_dir) as lock:
        return _train(experiment, model_dir, extra_callbacks, lock)


def _train(experiment, model_dir, extra_callbacks, lock):
    settings, data_settings = experiment.train, experiment.data
    # First, before any other TensorFlow op: multi_worker configures the collective runtime.
    strategy = distribute.make_strategy(settings.strategy, settings.tpu)
    chief = distribute.is_chief(strategy)  # only the chief writes the model_dir
    if chief:
        lock.acquire()  # released by train(); removes the folder again if nothing is written
    spec = experiment.model
    data_spec = data.get_spec(data_settings.dataset)
    train_images = _load_split(data_settings, data_settings.train_split)
    if data_settings.max_train_examples > 0:
        train_images = train_images[:data_settings.max_train_examples]
    eval_every = settings.eval_every_epochs
    eval_images = _load_split(data_settings, data_settings.eval_split) if eval_every else None
    # Training's evaluations (validation, diagnostics) use population batch-norm statistics.
    population = None
    if (experiment.eval.bn_statistics == "population" and spec.batch_norm
            and settings.strategy == "default"):  # replicas: moving
        population = batch_norm_statistics.TrainingSplitStatistics(
            train_images, data_spec, experiment.eval.bn_statistics_batch_size)
    diagnostics_callbacks = diagnostics.from_settings(experiment, model_dir, train_images,
                                                      eval_images, population)
    steps_per_epoch = len(train_images) // settings.batch_size
    if steps_per_epoch < 1:
        raise experiment_config.ConfigError(
            f"train.batch_size={settings.batch_size} is larger than the "
            f"{len(train_images)} training examples of {data_settings.train_split!r}")
    if settings.batch_size % strategy.num_replicas_in_sync:
        raise experiment_config.ConfigError(
            f"train.batch_size={settings.batch_size} (the global batch) must be a multiple "
            f"of the {strategy.num_replicas_in_sync} replicas of strategy "
            f"{settings.strategy!r}")

    init_from = settings.init_from
    if init_from:  # checked before model_dir is touched
        _check_init_from(init_from, spec)
    if chief:
        _prepare_model_dir(model_dir, experiment)
    else:  # other workers' diagnostics would write the chief's files again
        diagnostics_callbacks = []
    keras.utils.set_random_seed(settings.seed)
    with strategy.scope():
        model = train_step.build_model(spec, settings.precision)
        if settings.sync_batch_norm:
            distribute.synchronize_batch_norm(model)
        model.configure_objective(settings.mc_samples, settings.iw_samples,
                                  settings.warmup_epochs * steps_per_epoch,
                                  noise_seed=settings.seed,
                                  clip_global_norm=settings.clip_global_norm,
                                  clip_value=settings.clip_value)
        learning_rate = learning_rate_schedule(
            settings.learning_rate, settings.lr_decay_factor,
            settings.lr_decay_every_epochs * steps_per_epoch)
        optimizer = make_optimizer(learning_rate, settings.adam_epsilon, settings.precision)
        model.compile(optimizer=optimizer,
                      jit_compile=distribute.jit_compile_for(strategy, settings.jit_compile))
        optimizer.build(model.trainable_variables)

    state = fault_tolerance.TrainingCheckpoint(
        model, optimizer, model_dir,
        write_dir=None if chief else distribute.worker_scratch_dir(strategy))
    resume = state.restore()
    if resume is None and init_from:  # a new run starts from another run's weights
        _restore_weights(model, init_from)
        logging.info("started from the weights of %s", init_from)
    requested_steps_per_call = settings.steps_per_execution
    if settings.strategy != "default" and requested_steps_per_call > 1:
        # Keras' multi-step while loop fails under MirroredStrategy (an unfed placeholder
        # in its step's cond); replicas run one step per call.
        logging.info("train.steps_per_execution=%d not used with strategy %r: one step per "
                     "call", requested_steps_per_call, settings.strategy)
        requested_steps_per_call = 1
    # A plain attribute until fit builds its train function (Keras 3).
    model.steps_per_execution = fault_tolerance.steps_per_call(
        requested_steps_per_call, steps_per_epoch, resume.step_in_epoch if resume else 0)
    if resume and resume.epoch >= settings.epochs:
        logging.info("%s already trained for %d epochs; nothing to do", model_dir,
                     resume.epoch)
        state.close()
        return model, None

    with tf.device("/CPU:0"):  # one copy, captured by every epoch's dataset
        train_tensor = tf.convert_to_tensor(train_images, tf.float32)

    def epoch_dataset(epoch):  # epoch e's order and bits depend on (seed, e) only
        return data.make_dataset(train_tensor, data_spec, settings.batch_size, shuffle=True,
                                 seed=settings.seed, epoch=epoch, drop_remainder=True)

    eval_ds = (data.make_dataset(eval_images, data_spec, experiment.eval.batch_size)
               if eval_every else None)
    bn_callbacks = ([batch_norm_statistics.PopulationStatisticsForValidation(population)]
                    if eval_every and population is not None else [])
    callbacks = [
        *bn_callbacks,  # first: validation runs with the population statistics
        fault_tolerance.ResumableCheckpoint(
            state, steps_per_epoch, settings.epochs, settings.checkpoint_every_steps,
            settings.max_consecutive_skips, resume,
            os.path.join(model_dir, model_dir_lib.STATE_FILE) if chief else None),
        *([keras.callbacks.TensorBoard(os.path.join(model_dir, model_dir_lib.LOG_DIR),
                                       write_graph=False)] if chief else []),
        *diagnostics_callbacks,
        *extra_callbacks,
        progress.FewMetricsProgbar(),   # TensorBoard and the History keep every metric
    ]
    try:
        history = fault_tolerance.fit_resumable(
            model, epoch_dataset, resume, settings.epochs, steps_per_epoch,
            validation_data=eval_ds, validation_freq=max(eval_every, 1),
            callbacks=callbacks, verbose=settings.verbose)
        distribute.barrier(strategy)
    finally:
        state.close()
    return model, history
