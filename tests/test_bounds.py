"""log-mean-exp, the streamed log-sum-exp and the training objective against scipy/numpy."""
import numpy as np
import tensorflow as tf
from scipy.special import logsumexp

from tf_lvae.model import bounds


def test_log_mean_exp_matches_scipy_even_for_huge_magnitudes():
    rng = np.random.default_rng(0)
    log_weights = rng.normal(size=(50, 3)) * 30 - 800.0  # exp() alone would underflow
    expected = logsumexp(log_weights, axis=0) - np.log(50)
    np.testing.assert_allclose(bounds.log_mean_exp(tf.constant(log_weights)), expected,
                               rtol=1e-12)


def test_running_logsumexp_over_chunks_equals_one_shot():
    rng = np.random.default_rng(1)
    log_weights = rng.normal(size=(1000, 4)) * 50 + 300.0
    state = bounds.running_logsumexp_init([4], tf.float64)
    for start in range(0, 1000, 130):  # uneven last chunk on purpose
        state = bounds.running_logsumexp_update(state, tf.constant(log_weights[start:start + 130]))
    streamed = bounds.running_logsumexp_result(state, 1000)
    np.testing.assert_allclose(streamed, logsumexp(log_weights, axis=0) - np.log(1000),
                               rtol=1e-12)


def test_importance_weighted_objective_averages_mc_draws_of_iw_bounds():
    rng = np.random.default_rng(2)
    log_weights = rng.normal(size=(3, 5, 7))  # [S_mc, K_iw, B]
    expected = np.mean(logsumexp(log_weights, axis=1) - np.log(5), axis=0)
    np.testing.assert_allclose(bounds.importance_weighted_objective(tf.constant(log_weights)),
                               expected, rtol=1e-12)
    # With K_iw = 1 it is the plain average of the log weights (the MC ELBO).
    np.testing.assert_allclose(
        bounds.importance_weighted_objective(tf.constant(log_weights[:, :1])),
        log_weights[:, 0].mean(axis=0), rtol=1e-12)
