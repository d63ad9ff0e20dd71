"""Monte-Carlo objectives: the ELBO (L_1) and the importance-weighted bound L_K (eq. 6).

    L_1(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))
    L_K(x) = E[log (1/K) sum_k w_k],    w_k = p(x, z_k) / q(z_k|x),  z_k ~ q(z|x)

L_K >= L_1 and L_K -> log p(x) as K -> infinity (Burda et al., 2016). For large K the log
weights are streamed in chunks and folded into a running log-sum-exp so memory stays
constant in K.
"""
import math

import tensorflow as tf


def log_mean_exp(log_weights, axis=0):
    """log (1/K) sum_k exp(log_weights_k) along `axis`, computed stably."""
    k = tf.cast(tf.shape(log_weights)[axis], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=axis) - tf.math.log(k)


def importance_weighted_objective(log_weights):
    """Training objective of eq. 6 for log weights [S_mc, K_iw, B].

    Averages over the S_mc Monte-Carlo draws the log of the mean of K_iw importance weights:
    with K_iw = 1 this is the plain Monte-Carlo ELBO. Returns [B].
    """
    return tf.reduce_mean(log_mean_exp(log_weights, axis=1), axis=0)


def running_logsumexp_init(batch_shape, dtype=tf.float32):
    """State (max, scaled_sum) of an empty running log-sum-exp over `batch_shape`."""
    return (tf.fill(batch_shape, tf.constant(-math.inf, dtype)), tf.zeros(batch_shape, dtype))


def running_logsumexp_update(state, log_weights_chunk):
    """Fold a chunk of log weights [C, ...] into the running state; returns the new state.

    The state keeps m = max seen so far and s = sum exp(w - m), so the log-sum-exp is
    m + log(s) and no exp ever overflows.
    """
    running_max, scaled_sum = state
    chunk_max = tf.reduce_max(log_weights_chunk, axis=0)
    new_max = tf.maximum(running_max, chunk_max)
    # exp(-inf - finite) = 0 handles the empty initial state without NaNs.
    safe_old = tf.where(tf.math.is_inf(running_max), tf.zeros_like(scaled_sum),
                        scaled_sum * tf.exp(running_max - new_max))
    new_sum = safe_old + tf.reduce_sum(tf.exp(log_weights_chunk - new_max[None]), axis=0)
    return new_max, new_sum


def running_logsumexp_result(state, count):
    """log (1/count) sum exp(w) from a running state."""
    running_max, scaled_sum = state
    return running_max + tf.math.log(scaled_sum) - math.log(count)
