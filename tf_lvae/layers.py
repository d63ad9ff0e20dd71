"""Keras 3 layers of the Ladder VAE: MLP blocks and heads that build TFP distributions.

Every mapping in the paper is d = MLP(y) with two hidden layers, followed by
mean = Linear(d) and var = Softplus(Linear(d)). Heads return `tfd.Normal` / `tfd.Bernoulli`
objects so the model reads like the paper; the pure maths they rely on lives in
`gaussian_math`. (`tfp.layers` are tf-keras layers and do not work in Keras 3, hence these.)
"""
import contextlib

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lvae import gaussian_math
from tf_lvae import weight_gradients
from tf_lvae.model_spec import ACTIVATIONS

tfd = tfp.distributions

LEAKY_RELU_SLOPE = 0.1  # the paper's max(x, 0.1 x)
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9


# Keras dtype policies a model can be built with (`build_model(spec, precision)`).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def global_dtype_policy(precision):
    """Build layers under Keras dtype policy `precision` (None: leave the global policy); the
    previous global policy returns afterwards (layers keep the policy they were built with)."""
    if precision is None:
        yield
        return
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def distribution_dtype():
    """dtype policy of the layers that parameterise distributions: float32 under mixed precision.

    Under a global `mixed_float16` / `mixed_bfloat16` policy the MLPs compute in 16 bits, but
    means, variances (softplus + 1e-5 floor), logits and log-densities stay float32, where the
    floor and log-likelihoods of ~-100 nats are representable. None keeps the global policy.
    """
    policy = keras.config.dtype_policy()
    return policy.variable_dtype if policy.compute_dtype != policy.variable_dtype else None


def _hidden_initializer():
    # Glorot normal with gain sqrt(2), as in the authors' code for rectifier MLPs.
    return keras.initializers.VarianceScaling(2.0, "fan_avg", "untruncated_normal")


class MLPBlock(keras.layers.Layer):
    """Two hidden layers of Dense -> [BatchNorm] -> nonlinearity. [N, D_in] -> [N, width]."""

    def __init__(self, width, activation="leaky_relu", batch_norm=True, num_hidden=2, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.width, self.activation, self.batch_norm = width, activation, batch_norm
        self.dense_layers = [
            keras.layers.Dense(width, kernel_initializer=_hidden_initializer(),
                               use_bias=not batch_norm, name=f"dense_{i}")  # BN has its own shift
            for i in range(num_hidden)]
        self.norm_layers = [
            keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON,
                                            momentum=BATCH_NORM_MOMENTUM, name=f"bn_{i}")
            for i in range(num_hidden)] if batch_norm else []

    def call(self, inputs, training=False):
        h = inputs
        for i, dense in enumerate(self.dense_layers):
            h = weight_gradients.dense(dense, h)
            if self.batch_norm:
                h = self.norm_layers[i](h, training=training)
            if self.activation == "leaky_relu":
                h = tf.nn.leaky_relu(h, alpha=LEAKY_RELU_SLOPE)
            elif self.activation == "tanh":
                h = tf.tanh(h)
        return h

    def inference_weights(self):
        """[(kernel [D_in, width], bias [width])] per hidden layer, BatchNorm folded in.

        In inference mode BatchNorm is the affine map h -> h * s + t with
        s = gamma / sqrt(moving_var + eps), t = beta - moving_mean * s, so each hidden layer is
        one matmul + bias (x @ (W * s) + t): what `apply_inference_weights` computes, the
        same function as `call(training=False)` up to float rounding. Compute once per
        evaluation call, reuse for every chunk of samples.
        """
        folded = []
        for i, dense in enumerate(self.dense_layers):
            kernel = tf.convert_to_tensor(dense.kernel)
            bias = tf.convert_to_tensor(dense.bias) if dense.use_bias else None
            if self.batch_norm:
                norm = self.norm_layers[i]
                scale = norm.gamma * tf.math.rsqrt(norm.moving_variance + norm.epsilon)
                shift = norm.beta - norm.moving_mean * scale
                kernel = kernel * scale
                bias = shift if bias is None else bias * scale + shift
            folded.append((kernel, bias))
        return folded

    def apply_inference_weights(self, weights, inputs):
        """The block in inference mode from `inference_weights()`: [N, D_in] -> [N, width].

        matmul + bias_add + activation is the pattern TF's CPU graph optimizer fuses into one
        oneDNN call; under XLA it is one dot and one fused elementwise loop.
        """
        h = tf.cast(inputs, self.compute_dtype)
        for kernel, bias in weights:
            h = tf.matmul(h, tf.cast(kernel, h.dtype))
            if bias is not None:
                h = tf.nn.bias_add(h, tf.cast(bias, h.dtype))
            if self.activation == "leaky_relu":
                h = tf.nn.leaky_relu(h, alpha=LEAKY_RELU_SLOPE)
            elif self.activation == "tanh":
                h = tf.tanh(h)
        return h


class GaussianHead(keras.layers.Layer):
    """mean = Linear(d), var = Softplus(Linear(d)) + floor, as one fused Dense(2 * units).

    Returns `tfd.Normal(mean, sqrt(var))` with batch shape [N, units].
    """

    def __init__(self, units, variance_floor=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.units, self.variance_floor = units, variance_floor
        # One matmul for both heads; the variance half starts at softplus(1) like the authors'.
        self.dense = keras.layers.Dense(
            2 * units, kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.Constant([0.0] * units + [1.0] * units),
            dtype=distribution_dtype(), name="mean_and_variance")

    def call(self, features):
        mean, variance = self.mean_and_variance(features)
        return tfd.Normal(loc=mean, scale=tf.sqrt(variance))

    def mean_and_variance(self, features):
        """(mean, variance), each [N, units], without building a distribution object."""
        return gaussian_parameters(weight_gradients.dense(self.dense, features),
                                   self.variance_floor)


def gaussian_parameters(pre_activation, variance_floor):
    """(mean, Softplus(.) + floor) from a Gaussian head's fused pre-activation [N, 2 * units]."""
    mean, pre_variance = tf.split(pre_activation, 2, axis=-1)
    return mean, gaussian_math.softplus_variance(pre_variance, variance_floor)


class BernoulliObservation(keras.layers.Layer):
    """p(x | z_1) = Bernoulli(sigmoid(Linear(d))) over flattened pixels [N, D]."""

    def __init__(self, num_pixels, **kwargs):
        super().__init__(**kwargs)
        self.logits = keras.layers.Dense(num_pixels, kernel_initializer="glorot_normal",
                                         dtype=distribution_dtype(), name="logits")

    def call(self, features):
        return tfd.Bernoulli(logits=weight_gradients.dense(self.logits, features),
                             dtype=tf.float32)


class GaussianObservation(keras.layers.Layer):
    """p(x | z_1) = N(Linear(d), Softplus(Linear(d)) + floor) over flattened pixels [N, D]."""

    def __init__(self, num_pixels, variance_floor=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.head = GaussianHead(num_pixels, variance_floor, name="gaussian_pixels")

    def call(self, features):
        return self.head(features)


def observation_mean(distribution):
    """The image an observation model predicts: Bernoulli probabilities or Gaussian means."""
    if isinstance(distribution, tfd.Bernoulli):
        return tf.sigmoid(distribution.logits)
    return distribution.loc
