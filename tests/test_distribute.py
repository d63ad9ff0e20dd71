"""tf.distribute training: 2 replicas vs one device, and a 2-worker cluster on localhost.

Logical CPU devices must be configured before TensorFlow initializes its devices, and a
MultiWorkerMirroredStrategy needs one process per worker, so the runs happen in subprocesses
(started together, they overlap on the 2 cores).

Tolerances (measured values in docs/FAULT_TOLERANCE.md):
  * posterior means instead of samples (no noise): 2 replicas reach the weights of one device
    to 1e-5 (float summation order differs); training losses agree to 1e-5 relative.
  * train() end to end: the replicas draw their own posterior noise, so the runs are two
    draws of the same training; last-epoch loss and ELBO agree to 1% relative.
  * 2 workers (one CPU each) end with identical weights, equal to the 2-replica
    MirroredStrategy run on one host to 1e-6.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.training import distribute
from tf_lvae import experiment_config
from tf_lvae.configs import base

MEANS_TOLERANCE, END_TO_END_TOLERANCE, WORKER_TOLERANCE = 1e-5, 0.01, 1e-6


def tiny_config(strategy="default"):
    config = base.base_config()
    config.model.latent_sizes, config.model.hidden_sizes = (8, 4), (32, 16)
    config.data.max_train_examples = 512
    config.train.update(epochs=2, batch_size=32, warmup_epochs=1, jit_compile=False,
                        eval_every_epochs=0, diagnostics_every_epochs=0, verbose=0,
                        checkpoint_every_steps=10, strategy=strategy, sync_batch_norm=True)
    return config


# One process with 2 logical CPUs: train() on one device and with MirroredStrategy, the
# posterior-means comparison, and a global batch the replicas cannot share.
TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, ml_collections, numpy as np
    from absl import logging
    from tf_lvae import data, experiment_config
    from tf_lvae.training import distribute
    from tf_lvae.training import loop as training
    from tf_lvae.training.train_step import TrainableVAE
    logging.set_verbosity(logging.INFO)

    config, out = ml_collections.ConfigDict(json.loads(sys.argv[1])), sys.argv[2]
    results = {}
    for strategy in ("default", "mirrored"):
        config.train.strategy = strategy
        config.train.jit_compile = strategy == "mirrored"   # must be switched off on CPU
        model, history = training.train(config, f"{out}/{strategy}")
        results[strategy] = dict(history=history.history,
                                 replicas=model.distribute_strategy.num_replicas_in_sync)
        np.savez(f"{out}/{strategy}.npz", *[v.numpy() for v in model.weights])

    class MeanDraws(TrainableVAE):
        # Posterior means instead of samples: without noise, replicas must match one device.
        def posterior_draws(self, up_stats, num_samples=1, training=False,
                            deterministic=False, seed=None):
            return super().posterior_draws(up_stats, num_samples, training, True, seed)

    spec = experiment_config.model_spec(config)
    images = data.load_arrays("binarized_mnist", "train")[0][:256]
    batches = data.make_dataset(images, data.get_spec("binarized_mnist"), 32,
                                drop_remainder=True)

    def fit(strategy, clip=(0.0, 0.0)):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = MeanDraws(spec)
            model(tf.zeros([1, *spec.image_shape]))
            distribute.synchronize_batch_norm(model)
            model.configure_objective(1, 1, 8, clip_global_norm=clip[0], clip_value=clip[1])
            # Plain SGD: unlike Adam its step grows with the gradient, so a missing 1/replicas
            # loss scaling would double every update.
            model.compile(optimizer=keras.optimizers.SGD(1e-3), jit_compile=False)
        return model, model.fit(batches, epochs=2, verbose=0).history

    one, one_history = fit(tf.distribute.get_strategy())
    two, two_history = fit(distribute.make_strategy("mirrored"))
    results["means"] = dict(
        history=[one_history, two_history],
        max_difference=max(float(np.abs(a.numpy() - b.numpy()).max())
                           for a, b in zip(one.weights, two.weights)))
    # The authors' clipping, tight enough to bind on every step: it must clip the global
    # batch's gradient, not each replica's half.
    clip = (2.0, 0.02)
    one_clipped, _ = fit(tf.distribute.get_strategy(), clip)
    two_clipped, _ = fit(distribute.make_strategy("mirrored"), clip)
    results["clipped"] = dict(
        max_difference=max(float(np.abs(a.numpy() - b.numpy()).max())
                           for a, b in zip(one_clipped.weights, two_clipped.weights)),
        change_from_unclipped=max(float(np.abs(a.numpy() - b.numpy()).max())
                                  for a, b in zip(one.weights, one_clipped.weights)))

    config.train.batch_size = 33
    try:
        training.train(config, f"{out}/odd")
    except experiment_config.ConfigError as error:
        results["odd_batch_error"] = str(error)
    json.dump(results, open(f"{out}/results.json", "w"))
""")

WORKER = textwrap.dedent("""
    import json, sys
    import ml_collections, numpy as np
    from tf_lvae.training import loop as training
    model, history = training.train(ml_collections.ConfigDict(json.loads(sys.argv[1])),
                                    sys.argv[2])
    np.savez(sys.argv[3], *[v.numpy() for v in model.weights])
    json.dump(history.history, open(sys.argv[3] + ".json", "w"))
""")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(script, args, log, **env):
    with open(log, "w") as handle:
        return subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env),
                                stdout=handle, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The output folder of the 2-device process and of a 2-worker cluster, run together."""
    out = tmp_path_factory.mktemp("distribute")
    processes = [_start(TWO_DEVICES, [tiny_config().to_json(), out], out / "two_devices.log")]
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": index}})
        processes.append(_start(WORKER, [tiny_config("multi_worker").to_json(),
                                         out / "cluster", out / f"worker{index}.npz"],
                                out / f"worker{index}.log", TF_CONFIG=tf_config))
    try:
        for process in processes:
            process.wait(timeout=400)
    finally:
        for process in processes:   # a worker whose peer died would wait forever
            if process.poll() is None:
                process.kill()
    for process, log in zip(processes, ["two_devices", "worker0", "worker1"]):
        assert process.returncode == 0, (out / f"{log}.log").read_text()[-3000:]
    return out


def _weights(path):
    weights = np.load(path)
    return [weights[key] for key in weights.files]


@pytest.mark.slow
def test_two_replicas_train_like_one_device(runs):
    results = json.loads((runs / "results.json").read_text())
    assert results["default"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    assert "jit_compile disabled: MirroredStrategy with 2 CPU replicas" in (
        runs / "two_devices.log").read_text()
    one, two = results["default"]["history"], results["mirrored"]["history"]
    for key in ("loss", "elbo", "log_px"):
        np.testing.assert_allclose(two[key][-1], one[key][-1], rtol=END_TO_END_TOLERANCE)
    assert two["skipped_steps"] == [0.0, 0.0] and two["active_units_1"][-1] == 8.0
    assert two["elbo"][1] > two["elbo"][0] + 20          # and it is learning


@pytest.mark.slow
def test_without_noise_two_replicas_reach_the_weights_of_one_device(runs):
    means = json.loads((runs / "results.json").read_text())["means"]
    assert means["max_difference"] < MEANS_TOLERANCE
    one, two = means["history"]
    for key in ("loss", "elbo", "kl", "active_units_1"):  # metrics reduced over replicas
        np.testing.assert_allclose(two[key], one[key], rtol=MEANS_TOLERANCE)


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(runs):
    first, second = _weights(runs / "worker0.npz"), _weights(runs / "worker1.npz")
    assert len(first) == len(second) == len(_weights(runs / "mirrored.npz"))
    for a, b, mirrored in zip(first, second, _weights(runs / "mirrored.npz")):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, mirrored, rtol=WORKER_TOLERANCE, atol=WORKER_TOLERANCE)
    history = json.loads((runs / "worker0.npz.json").read_text())
    assert history == json.loads((runs / "worker1.npz.json").read_text())
    # Only the chief wrote the model_dir; its last checkpoint holds the final weights.
    state = json.loads((runs / "cluster" / "training_state.json").read_text())
    assert state["finished"] and state["checkpoint"] == "ckpt-32"


@pytest.mark.slow
def test_a_global_batch_the_replicas_cannot_share_is_rejected(runs):
    error = json.loads((runs / "results.json").read_text())["odd_batch_error"]
    assert "batch_size=33 (the global batch) must be a multiple of the 2 replicas" in error


@pytest.mark.slow
def test_two_replicas_clip_the_global_gradient_like_one_device(runs):
    clipped = json.loads((runs / "results.json").read_text())["clipped"]
    assert clipped["change_from_unclipped"] > 100 * MEANS_TOLERANCE   # the clipping binds
    assert clipped["max_difference"] < MEANS_TOLERANCE


def test_one_device_keeps_jit_and_needs_no_scaling():
    strategy = distribute.make_strategy("default")
    assert strategy.num_replicas_in_sync == 1 and distribute.is_chief(strategy)
    assert distribute.jit_compile_for(strategy, True) is True
    assert float(distribute.replica_seed(0, 5)) == float(distribute.replica_seed(0, 5))
    assert float(distribute.replica_seed(0, 5)) != float(distribute.replica_seed(0, 6))
    assert bool(distribute.all_replicas_true(tf.constant(True)))
    assert not bool(distribute.all_finite([tf.constant([1.0, np.nan])]))


def test_unknown_strategy_is_rejected():
    config = tiny_config("parameter_server")
    with pytest.raises(ValueError, match="train.strategy must be one of"):
        experiment_config.validate_config(config)
