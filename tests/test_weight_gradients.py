"""The copied-transpose weight gradient: same values and gradients as a plain Dense, under XLA."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae import weight_gradients


def _dense_and_inputs(in_features, units, use_bias=True, dtype="float32"):
    keras.utils.set_random_seed(3)
    layer = keras.layers.Dense(units, use_bias=use_bias, bias_initializer="random_normal",
                               dtype=dtype)
    layer.build((None, in_features))
    x = tf.constant(np.random.default_rng(0).normal(size=(64, in_features)), tf.float32)
    return layer, x


def _value_and_gradients(layer, x, enabled, jit=True):
    @tf.function(jit_compile=jit)
    def run(x):
        with weight_gradients.copied_transposes(enabled), tf.GradientTape() as tape:
            tape.watch(x)
            y = weight_gradients.dense(layer, x)
            # A loss whose gradient dy is not constant across rows or units.
            loss = tf.reduce_sum(tf.sin(tf.cast(y, tf.float32)) * tf.range(
                1.0, 1.0 + y.shape[-1]))
        return (y, *tape.gradient(loss, [x, *layer.trainable_variables]))
    return [t.numpy() for t in run(x)]


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_the_plain_dense_under_xla(use_bias):
    layer, x = _dense_and_inputs(256, 320, use_bias)
    plain = _value_and_gradients(layer, x, enabled=False)
    copied = _value_and_gradients(layer, x, enabled=True)
    assert len(copied) == (4 if use_bias else 3)
    for got, want in zip(copied, plain):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # and the plain gradient is the textbook one: dkernel = x^T dy (numpy, from the same dy)
    y = x.numpy() @ layer.kernel.numpy() + (layer.bias.numpy() if use_bias else 0)
    dy = np.cos(y) * np.arange(1.0, 321.0)
    np.testing.assert_allclose(copied[2], x.numpy().T @ dy, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(copied[1], dy @ layer.kernel.numpy().T, rtol=1e-4, atol=1e-3)


def _custom_gradient_ops(layer, x, enabled):
    with weight_gradients.copied_transposes(enabled):
        graph = tf.function(lambda x: weight_gradients.dense(layer, x)).get_concrete_function(
            x).graph
    # tf.custom_gradient shows in a graph as an IdentityN op carrying the gradient override.
    return [op for op in graph.get_operations() if op.type == "IdentityN"]


def test_only_large_layers_inside_the_context_take_the_custom_gradient():
    large, x_large = _dense_and_inputs(256, 512)
    small, x_small = _dense_and_inputs(32, 512)
    assert _custom_gradient_ops(large, x_large, enabled=True)
    assert not _custom_gradient_ops(large, x_large, enabled=False)
    assert not _custom_gradient_ops(small, x_small, enabled=True)


def test_context_restores_the_previous_setting():
    with weight_gradients.copied_transposes(True):
        with weight_gradients.copied_transposes(False):
            assert not weight_gradients._enabled[0]
        assert weight_gradients._enabled[0]
    assert not weight_gradients._enabled[0]


def test_mixed_precision_layer_keeps_its_dtypes():
    """A float16-compute layer with float32 weights: float16 outputs, float32 kernel gradient."""
    layer, x = _dense_and_inputs(256, 256, dtype="mixed_float16")
    y, dx, dkernel, dbias = _value_and_gradients(layer, x, enabled=True)
    assert y.dtype == np.float16 and dkernel.dtype == np.float32
    plain = _value_and_gradients(layer, x, enabled=False)
    np.testing.assert_allclose(dkernel, plain[2], rtol=2e-2, atol=2e-1)
