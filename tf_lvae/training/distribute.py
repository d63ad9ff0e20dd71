"""tf.distribute strategies for training: which one, and what training must do under it.

    python -m tf_lvae.train --strategy=mirrored ...       # all local GPUs (or CPUs) of one host
    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \
      python -m tf_lvae.train --strategy=multi_worker ... # one process per worker, same flags
    python -m tf_lvae.train --strategy=tpu --config.train.tpu=NAME ...

`config.train.batch_size` is always the global batch: each of the R replicas trains on
batch_size / R examples of every batch, and the train step divides each replica's mean loss by R
so that the summed (all-reduced) gradients are those of the global mean loss.
"""
import json
import os
import tempfile

import keras
import tensorflow as tf
from absl import logging

from tf_lvae.experiment_config import STRATEGIES

_CREATED = {}  # one strategy of each kind per process: a second one's collectives would clash


def make_strategy(name="default", tpu=""):
    """The tf.distribute.Strategy called `name` (one of STRATEGIES), created once per process.

    mirrored: one replica per local GPU, or per logical CPU device where there is no GPU.
    multi_worker: MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable;
      create it before any other TensorFlow op runs (it configures the collective ops).
    tpu: TPUStrategy on the TPU named `tpu` ('' : the local TPU or the one the environment names).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if (name, tpu) not in _CREATED:
        _CREATED[name, tpu] = _create(name, tpu)
    return _CREATED[name, tpu]


def _create(name, tpu):
    if name == "mirrored":
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            logging.warning("strategy=multi_worker without TF_CONFIG: training as one worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(f"strategy=tpu, but no TPU {tpu or '(default)'} could be reached "
                             f"({error}); set config.train.tpu or use another --strategy") from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def num_replicas():
    """Replicas of the strategy in scope (1 outside any strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def is_multi_worker(strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """Whether this process writes the model_dir (always, except on non-chief workers)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().jobs)


def worker_scratch_dir(strategy):
    """Where a non-chief worker writes what it must write (its checkpoints): a fresh temp dir.

    Every worker must take part in saving a checkpoint (reading distributed variables runs
    collectives), but only the chief's copy is kept in the model_dir.
    """
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    prefix = f"tf_lvae_{task.get('type', 'worker')}{task.get('index', '')}_"
    return tempfile.mkdtemp(prefix=prefix)


def jit_compile_for(strategy, jit_compile):
    """jit_compile, except False for several replicas on CPU (XLA cannot compile that step)."""
    if not jit_compile or strategy.num_replicas_in_sync == 1:
        return jit_compile
    devices = strategy.extended.worker_devices
    if all("CPU" in device.upper() for device in devices):
        logging.info("jit_compile disabled: %s with %d CPU replicas does not compile with XLA",
                     type(strategy).__name__, strategy.num_replicas_in_sync)
        return False
    return jit_compile


def synchronize_batch_norm(model):
    """Make every BatchNormalization layer of `model` use the global batch's statistics.

    With R replicas each normalizes by its own batch_size / R examples otherwise, which differs
    from single-device training. The weights are unchanged (only how batch moments are
    computed), so this is a training option, not part of the ModelSpec. Returns the count.
    """
    # Keras' own recursive walk over nested layers (there is no public one).
    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def replica_seed(seed, step):
    """int32 scalar seed for the posterior noise of one train step on this replica.

    A pure function of (seed, step, replica id), so a run resumed from a checkpoint of `step`
    draws the same noise as an uninterrupted one (and replicas draw independent noise).
    int32 throughout: XLA compiles stateless RNG ops with int32 seeds only.
    """
    replica = tf.distribute.get_replica_context()
    replica_id = tf.constant(0) if replica is None else replica.replica_id_in_sync_group
    pair = tf.stack([tf.cast(seed, tf.int32), tf.cast(step, tf.int32)])
    pair = tf.random.fold_in(pair, tf.cast(replica_id, tf.int32))
    return tf.random.stateless_uniform([], seed=pair, minval=None, maxval=None, dtype=tf.int32)


def all_replicas_true(flag):
    """Bool scalar: `flag` holds on every replica (a SUM all-reduce; identity on one device)."""
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return flag
    failures = replica.all_reduce(tf.distribute.ReduceOp.SUM,
                                  tf.cast(tf.logical_not(flag), tf.float32))
    return tf.equal(failures, 0.0)


def step_logs(logs):
    """Step outputs as Keras can reduce them: MultiWorkerMirroredStrategy reduces the step's
    outputs with `strategy.reduce(MEAN, axis=0)`, which needs a leading axis (shape [1])."""
    if not is_multi_worker():
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def on_first_replica(value):
    """`value` on replica 0 and 0 elsewhere: a Sum metric of it counts a global event once."""
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return value
    return tf.where(tf.equal(replica.replica_id_in_sync_group, 0), value, tf.zeros_like(value))


def all_finite(tensors):
    """Bool scalar: every element of every tensor (None entries skipped) is finite."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])


def apply_gradients_if(condition, optimizer, gradients, variables):
    """optimizer.apply(gradients, variables) if `condition`, else no update at all.

    `condition` must be the same on every replica (see `all_replicas_true`). Skipping leaves
    weights, optimizer slots and optimizer.iterations untouched. As in Keras'
    LossScaleOptimizer, strategies that update through merge_call (MirroredStrategy) need the
    branch taken in cross-replica context: a cond in replica context cannot merge_call.
    """
    if (not tf.distribute.has_strategy()
            or tf.__internal__.distribute.strategy_supports_no_merge_call()):
        tf.cond(condition, lambda: optimizer.apply(gradients, variables), lambda: None)
        return

    def cross_replica(distribution, condition, gradients, variables):
        def apply_on_every_replica():
            distribution.extended.call_for_each_replica(optimizer.apply,
                                                        args=(gradients, variables))
        tf.cond(distribution.experimental_local_results(condition)[0],
                apply_on_every_replica, lambda: None)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(condition, gradients, variables))


def settle_statistics(condition, variables, old_values):
    """Finish a step's update of non-trainable weights (BatchNorm moving statistics).

    Where `condition` is False (a skipped step) the old values come back. With several
    replicas the values are then averaged over them: each replica updated its copy from its own
    batch (identical already with synchronized batch norm), and copies of a mirrored variable
    must stay equal, or every replica (and worker) would end with different statistics.
    """
    values = [tf.where(condition, variable, old) for variable, old in zip(variables, old_values)]
    replica = tf.distribute.get_replica_context()
    if values and replica is not None and replica.num_replicas_in_sync > 1:
        values = replica.all_reduce(tf.distribute.ReduceOp.MEAN, values)
    for variable, value in zip(variables, values):
        variable.assign(value)


def shard_by_data(dataset):
    """Let MultiWorkerMirroredStrategy split every global batch of an in-memory dataset between
    the workers (there are no files to shard by); other strategies ignore the option."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def barrier(strategy):
    """Wait until every worker gets here (a tiny all-reduce; a no-op on one worker). A worker
    that exits while the chief still writes would look like a crash to the coordination
    service."""
    if is_multi_worker(strategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)),
                        axis=None)
