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

from tf_lvae.model import gaussian_math
from tf_lvae.model.spec import ACTIVATIONS, PRECISIONS

tfd = tfp.distributions

LEAKY_RELU_SLOPE = 0.1  # the paper's max(x, 0.1 x); the authors' Lasagne code runs 0.01
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.9




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


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON,
                                           momentum=BATCH_NORM_MOMENTUM, name=name)


def fold_batch_norm(kernel, bias, norm):
    """(kernel, bias) of x @ kernel + bias followed by `norm` in inference mode, as one affine
    map: BatchNorm is h -> h * s + t with s = gamma / sqrt(moving_var + eps),
    t = beta - moving_mean * s. bias may be None (a Dense without bias)."""
    scale = norm.gamma * tf.math.rsqrt(norm.moving_variance + norm.epsilon)
    shift = norm.beta - norm.moving_mean * scale
    return kernel * scale, shift if bias is None else bias * scale + shift


class MLPBlock(keras.layers.Layer):
    """Two hidden layers of Dense -> [BatchNorm] -> nonlinearity. [N, D_in] -> [N, width]."""

    def __init__(self, width, activation="leaky_relu", batch_norm=True, num_hidden=2,
                 leaky_relu_slope=LEAKY_RELU_SLOPE, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.width, self.activation, self.batch_norm = width, activation, batch_norm
        self.leaky_relu_slope = float(leaky_relu_slope)
        self.dense_layers = [
            keras.layers.Dense(width, kernel_initializer=_hidden_initializer(),
                               use_bias=not batch_norm, name=f"dense_{i}")  # BN has its own shift
            for i in range(num_hidden)]
        self.norm_layers = ([_batch_norm(f"bn_{i}") for i in range(num_hidden)]
                            if batch_norm else [])

    def _activate(self, h):
        if self.activation == "leaky_relu":
            return tf.nn.leaky_relu(h, alpha=self.leaky_relu_slope)
        if self.activation == "tanh":
            return tf.tanh(h)
        return h

    def call(self, inputs, training=False):
        h = inputs
        for i, dense in enumerate(self.dense_layers):
            h = dense(h)
            if self.batch_norm:
                h = self.norm_layers[i](h, training=training)
            h = self._activate(h)
        return h

    def inference_weights(self):
        """[(kernel [D_in, width], bias [width])] per hidden layer, BatchNorm folded in.

        In inference mode each hidden layer is one matmul + bias (`fold_batch_norm`): what
        `apply_inference_weights` computes, the same function as `call(training=False)` up
        to float rounding. Compute once per evaluation call, reuse for every chunk of samples.
        """
        folded = []
        for i, dense in enumerate(self.dense_layers):
            kernel = tf.convert_to_tensor(dense.kernel)
            bias = tf.convert_to_tensor(dense.bias) if dense.use_bias else None
            if self.batch_norm:
                kernel, bias = fold_batch_norm(kernel, bias, self.norm_layers[i])
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
            h = self._activate(h)
        return h


class GaussianHead(keras.layers.Layer):
    """mean = Linear(d), var = Softplus(Linear(d)) + floor, as one fused Dense(2 * units).

    With batch_norm (the authors' heads) each half is Linear -> BatchNorm -> identity or
    softplus; BatchNorm normalizes every unit on its own, so one BatchNorm over the fused
    [N, 2 * units] pre-activation is the two heads' BatchNorms side by side.
    Returns `tfd.Normal(mean, sqrt(var))` with batch shape [N, units].
    """

    def __init__(self, units, variance_floor=1e-5, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.variance_floor, self.batch_norm = units, variance_floor, batch_norm
        # One matmul for both heads; without BatchNorm the variance half starts at
        # softplus(1) like the authors' (with it BatchNorm's shift, at 0, replaces the bias).
        self.dense = keras.layers.Dense(
            2 * units, kernel_initializer="glorot_uniform", use_bias=not batch_norm,
            bias_initializer=keras.initializers.Constant([0.0] * units + [1.0] * units),
            dtype=distribution_dtype(), name="mean_and_variance")
        self.norm = (keras.layers.BatchNormalization(
            epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM,
            dtype=distribution_dtype(), name="bn") if batch_norm else None)

    def call(self, features, training=False):
        mean, variance = self.mean_and_variance(features, training)
        return tfd.Normal(loc=mean, scale=tf.sqrt(variance))

    def pre_activation(self, features, training=False):
        """The fused pre-activation [N, 2 * units] (after BatchNorm, if any)."""
        h = self.dense(features)
        return self.norm(h, training=training) if self.batch_norm else h

    def mean_and_variance(self, features, training=False):
        """(mean, variance), each [N, units], without building a distribution object."""
        return gaussian_parameters(self.pre_activation(features, training),
                                   self.variance_floor)

    def inference_weights(self):
        """(kernel, bias) with pre_activation(x, training=False) = x @ kernel + bias."""
        kernel = tf.convert_to_tensor(self.dense.kernel)
        if self.batch_norm:
            return fold_batch_norm(kernel, None, self.norm)
        return kernel, tf.convert_to_tensor(self.dense.bias)


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
        return tfd.Bernoulli(logits=self.logits(features),
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
