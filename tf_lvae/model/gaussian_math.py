"""The paper's closed-form Gaussian algebra as small pure functions.

Every function works elementwise on tensors of any matching (broadcastable) shape, e.g.
[S*B, D] for S samples of a batch of B examples with D latent units; reductions over units
are left to the caller so per-unit quantities (needed for active units, Fig. 4) stay
available.
"""
import math

import tensorflow as tf

LOG_2PI = math.log(2.0 * math.pi)


def precision_weighted_merge(mean_hat, var_hat, mean_p, var_p):
    """Combine the bottom-up likelihood term with the top-down prior (eqs 17-19).

        var_q  = 1 / (1/var_hat + 1/var_p)
        mean_q = (mean_hat/var_hat + mean_p/var_p) * var_q

    Returns (mean_q, var_q), shaped like the broadcast of the inputs.
    """
    precision_hat = tf.math.reciprocal(var_hat)
    precision_p = tf.math.reciprocal(var_p)
    var_q = tf.math.reciprocal(precision_hat + precision_p)
    mean_q = (mean_hat * precision_hat + mean_p * precision_p) * var_q
    return mean_q, var_q


def gaussian_kl(mean_q, var_q, mean_p, var_p):
    """Elementwise KL(N(mean_q, var_q) || N(mean_p, var_p)) in nats."""
    return 0.5 * (tf.math.log(var_p) - tf.math.log(var_q)
                  + (var_q + tf.math.squared_difference(mean_q, mean_p)) / var_p - 1.0)


def standard_normal_kl(mean_q, var_q):
    """Elementwise KL(N(mean_q, var_q) || N(0, 1)): the top layer's term."""
    return 0.5 * (var_q + tf.square(mean_q) - 1.0 - tf.math.log(var_q))


def gaussian_log_prob(x, mean, var):
    """Elementwise log N(x; mean, var)."""
    return -0.5 * (LOG_2PI + tf.math.log(var) + tf.math.squared_difference(x, mean) / var)


def softplus_variance(pre_activation, floor):
    """var = Softplus(Linear(d)) + floor; the floor keeps log(var) and 1/var finite."""
    return tf.nn.softplus(pre_activation) + floor
