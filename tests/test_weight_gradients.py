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


def _dot_error_bound(n):
    """Worst-case relative error of a float32 dot product of length n, in any summation
    order (gamma_n = n u / (1 - n u), Higham, Accuracy and Stability, 3.1): CPUs differ in
    blocking and FMA use, so only this bound, not one machine's error, holds on every one."""
    unit = np.finfo(np.float32).eps / 2
    return n * unit / (1 - n * unit)


def _float32_tolerances(x, kernel, bias):
    """Per-element bounds on the float32 error of y, dx and dkernel of the test's loss
    sum_j k_j sin(y_j), from the error of each stage propagated through the next."""
    unit = np.finfo(np.float32).eps / 2
    x, kernel = x.astype(np.float64), kernel.astype(np.float64)
    k = np.arange(1.0, 1.0 + kernel.shape[1])
    y = x @ kernel + bias
    y_error = _dot_error_bound(kernel.shape[0] + 1) * (np.abs(x) @ np.abs(kernel) + np.abs(bias))
    dy = np.cos(y) * k
    # cos at a y off by y_error, cos's own rounding, the product with k
    dy_error = k * (np.abs(np.sin(y)) * y_error + 2 * unit) + np.abs(dy) * unit
    dkernel_error = (np.abs(x).T @ dy_error
                     + _dot_error_bound(x.shape[0]) * (np.abs(x).T @ np.abs(dy)))
    dx_error = (dy_error @ np.abs(kernel).T
                + _dot_error_bound(kernel.shape[1]) * (np.abs(dy) @ np.abs(kernel).T))
    return dict(y=y_error, dx=dx_error, dkernel=dkernel_error, dbias=dy_error.sum(0)
                + _dot_error_bound(x.shape[0]) * np.abs(dy).sum(0)), y, dy


def _assert_within(got, want, bound, name):
    excess = np.abs(np.asarray(got, np.float64) - want) - bound
    assert np.all(excess <= 0), (f"{name}: {np.sum(excess > 0)} of {excess.size} elements "
                                 f"beyond the float32 error bound (worst by {excess.max():.3g})")


@pytest.mark.parametrize("use_bias", [True, False])
def test_matches_the_plain_dense_under_xla(use_bias):
    layer, x = _dense_and_inputs(256, 320, use_bias)
    plain = _value_and_gradients(layer, x, enabled=False)
    copied = _value_and_gradients(layer, x, enabled=True)
    assert len(copied) == (4 if use_bias else 3)
    bias = layer.bias.numpy().astype(np.float64) if use_bias else 0.0
    bounds, y, dy = _float32_tolerances(x.numpy(), layer.kernel.numpy(), bias)
    names = ["y", "dx", "dkernel", "dbias"]
    # both are float32 computations of the same function: each within its bound of exact,
    # so within twice the bound of each other
    for got, want, name in zip(copied, plain, names):
        _assert_within(got, want, 2 * bounds[name], name)
    # and the plain gradient is the textbook one: dkernel = x^T dy, dx = dy W^T (float64)
    x64, kernel64 = x.numpy().astype(np.float64), layer.kernel.numpy().astype(np.float64)
    for got, want, name in zip(copied, [y, dy @ kernel64.T, x64.T @ dy, dy.sum(0)], names):
        _assert_within(got, want, bounds[name], name)


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
