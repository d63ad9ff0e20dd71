"""Several train steps in one XLA call: the same training as one step per call, only faster."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.fast import step_loop
from tf_lvae.training.train_step import build_model
from tf_lvae.model.spec import ModelSpec

SPEC = ModelSpec(latent_sizes=(8, 4), hidden_sizes=(32, 16))
BATCHES = np.stack([(np.random.default_rng(i).random((16, 28, 28, 1)) < 0.4).astype(np.float32)
                    for i in range(6)])


def _model(steps_per_execution, jit=True):
    keras.utils.set_random_seed(0)
    model = build_model(SPEC)
    model.configure_objective(warmup_steps=4, noise_seed=7)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-4), jit_compile=jit,
                  steps_per_execution=steps_per_execution)
    model.make_train_function()
    return model


def _run(model, num_batches):
    """Calls the train function until the iterator over num_batches batches is exhausted."""
    iterator = iter(tf.data.Dataset.from_tensor_slices(BATCHES[:num_batches]))
    calls, logs = 0, None
    while True:
        try:
            logs = model.train_function(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):   # ours, Keras' (1 step per call)
            return calls, {name: float(value) for name, value in logs.items()}
        calls += 1


@pytest.fixture(scope="module")
def one_step_per_call():
    model = _model(1)
    return model, _run(model, 6)


@pytest.mark.slow  # XLA compiles: ~10 s each on 2 cores
@pytest.mark.parametrize("steps_per_execution, expected_calls", [(3, 2), (4, 2)])
def test_fused_loop_trains_as_one_step_per_call(one_step_per_call, steps_per_execution,
                                                expected_calls):
    """4 steps per call over 6 batches: a full call then a call of the 2 left (the rest of
    its stack is padding no step reads); same weights, optimizer state and metrics."""
    reference, (reference_calls, reference_logs) = one_step_per_call
    model = _model(steps_per_execution)
    assert step_loop.applies(model)
    calls, logs = _run(model, 6)
    assert (reference_calls, calls) == (6, expected_calls)
    assert int(model.optimizer.iterations.numpy()) == 6
    for ours, theirs in zip(model.weights + model.optimizer.variables,
                            reference.weights + reference.optimizer.variables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=ours.path)
    assert logs.keys() == reference_logs.keys()
    for name in logs:
        np.testing.assert_allclose(logs[name], reference_logs[name], rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    assert logs["beta"] == pytest.approx(np.mean([0, 0.25, 0.5, 0.75, 1, 1]))


def test_used_only_where_it_applies():
    assert not step_loop.applies(_model(1))
    assert not step_loop.applies(_model(4, jit=False))
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = build_model(SPEC)
        model.compile(optimizer="adam", jit_compile=True, steps_per_execution=4)
    assert not step_loop.applies(model)


@pytest.mark.slow
def test_python_iterators_take_keras_own_loop():
    """train_on_batch feeds a Python generator: Keras' function runs it, 1 step per batch."""
    model = _model(4)
    logs = model.train_on_batch(BATCHES[0], return_dict=True)
    assert int(model.optimizer.iterations.numpy()) == 1 and np.isfinite(logs["loss"])
