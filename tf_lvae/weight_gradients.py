"""Dense layers whose weight gradient XLA:CPU computes as a plain, untransposed matmul.

The weight gradient of y = x @ W is x^T @ dy: a contraction over the batch dimension, with
the left operand transposed. XLA:CPU's dot runs that form at 93-143 GFLOP/s at this model's
shapes, but an untransposed product of a copied x^T at 140-161 (256x512x512: 93 -> 140,
docs/PERFORMANCE.md). XLA folds a plain transpose back into the dot, so the copy passes
through an optimization barrier, which only XLA knows: this is for XLA-compiled train steps
(`copied_transposes(True)` around the forward pass and `tape.gradient`). A TF graph keeps the
default gradient, which oneDNN runs fast as it is. Forward values are unchanged.
"""
import contextlib

import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla

# Smallest in- and out-features for which the copy pays off (smaller layers lose: the copy
# costs as much as the gain, measured in docs/PERFORMANCE.md).
MIN_FEATURES = 256

_enabled = [False]


@contextlib.contextmanager
def copied_transposes(enabled):
    """Layers called (traced) inside use the copied-transpose weight gradient if `enabled`."""
    previous = _enabled[0]
    _enabled[0] = bool(enabled)
    try:
        yield
    finally:
        _enabled[0] = previous


@tf.custom_gradient
def matmul_with_copied_transpose(x, kernel):
    """x @ kernel for x [N, D_in], kernel [D_in, D_out]; gradient dx = dy @ kernel^T and
    dkernel = copy(x^T) @ dy (XLA only: the copy is an XLA optimization barrier)."""
    def gradient(dy):
        x_transposed, = xla.optimization_barrier(tf.transpose(x))
        return tf.matmul(dy, kernel, transpose_b=True), tf.matmul(x_transposed, dy)
    return tf.matmul(x, kernel), gradient


def dense(layer, inputs):
    """`layer(inputs)` for a built, linear keras Dense on [N, D_in] inputs, with the
    copied-transpose weight gradient where it is enabled and the layer is large enough."""
    if not (_enabled[0] and layer.built and inputs.shape.rank == 2
            and min(inputs.shape[-1] or 0, layer.units) >= MIN_FEATURES
            and layer.activation.__name__ == "linear"):
        return layer(inputs)
    features = tf.cast(inputs, layer.compute_dtype)
    outputs = matmul_with_copied_transpose(features, tf.cast(layer.kernel, features.dtype))
    if layer.use_bias:
        outputs = tf.nn.bias_add(outputs, tf.cast(layer.bias, outputs.dtype))
    return outputs
