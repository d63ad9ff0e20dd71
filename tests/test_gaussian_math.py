"""The paper's closed-form pieces against independent references (numpy, scipy, Monte-Carlo)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import stats

from tf_lvae.model import gaussian_math

tfd = tfp.distributions


def _random_gaussians(rng, shape):
    return rng.normal(size=shape), rng.uniform(0.05, 3.0, size=shape)


def test_precision_weighted_merge_matches_product_of_gaussians():
    # Independent form: N(a, A) N(b, B) ∝ N((a B + b A) / (A + B), A B / (A + B)).
    rng = np.random.default_rng(0)
    mean_hat, var_hat = _random_gaussians(rng, (7, 5))
    mean_p, var_p = _random_gaussians(rng, (7, 5))
    mean_q, var_q = gaussian_math.precision_weighted_merge(mean_hat, var_hat, mean_p, var_p)
    np.testing.assert_allclose(var_q, var_hat * var_p / (var_hat + var_p), rtol=1e-10)
    np.testing.assert_allclose(mean_q, (mean_hat * var_p + mean_p * var_hat) / (var_hat + var_p),
                               rtol=1e-9, atol=1e-12)


def test_merge_is_dominated_by_the_more_certain_term():
    mean_q, var_q = gaussian_math.precision_weighted_merge(
        tf.constant([2.0]), tf.constant([1e-6]), tf.constant([-5.0]), tf.constant([10.0]))
    assert abs(float(mean_q[0]) - 2.0) < 1e-4
    assert float(var_q[0]) < 1e-6


def test_gaussian_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    mean_q, var_q = np.array([0.3, -1.0, 2.0]), np.array([0.5, 2.0, 0.1])
    mean_p, var_p = np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.7, 2.0])
    z = mean_q + np.sqrt(var_q) * rng.normal(size=(400_000, 3))
    log_ratio = (stats.norm.logpdf(z, mean_q, np.sqrt(var_q))
                 - stats.norm.logpdf(z, mean_p, np.sqrt(var_p)))
    monte_carlo = log_ratio.mean(axis=0)
    standard_error = log_ratio.std(axis=0) / np.sqrt(len(z))
    analytic = gaussian_math.gaussian_kl(mean_q, var_q, mean_p, var_p).numpy()
    assert np.all(np.abs(analytic - monte_carlo) < 4 * standard_error + 1e-6)


def test_gaussian_kl_matches_tfp_and_is_zero_for_equal_distributions():
    rng = np.random.default_rng(2)
    mean_q, var_q = _random_gaussians(rng, (4, 6))
    mean_p, var_p = _random_gaussians(rng, (4, 6))
    expected = tfd.kl_divergence(tfd.Normal(mean_q, np.sqrt(var_q)),
                                 tfd.Normal(mean_p, np.sqrt(var_p)))
    np.testing.assert_allclose(gaussian_math.gaussian_kl(mean_q, var_q, mean_p, var_p),
                               expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gaussian_math.gaussian_kl(mean_q, var_q, mean_q, var_q), 0.0,
                               atol=1e-12)


def test_standard_normal_kl_is_the_special_case():
    rng = np.random.default_rng(3)
    mean_q, var_q = _random_gaussians(rng, (10,))
    np.testing.assert_allclose(
        gaussian_math.standard_normal_kl(mean_q, var_q),
        gaussian_math.gaussian_kl(mean_q, var_q, np.zeros(10), np.ones(10)), rtol=1e-10)


def test_gaussian_log_prob_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4))
    mean, var = _random_gaussians(rng, (3, 4))
    np.testing.assert_allclose(gaussian_math.gaussian_log_prob(x, mean, var),
                               stats.norm.logpdf(x, mean, np.sqrt(var)), rtol=1e-10)


@pytest.mark.parametrize("pre_activation", [-50.0, 0.0, 30.0])
def test_softplus_variance_respects_floor(pre_activation):
    var = float(gaussian_math.softplus_variance(tf.constant(pre_activation, tf.float64), 1e-5))
    assert var >= 1e-5
    assert var == pytest.approx(np.log1p(np.exp(pre_activation)) + 1e-5, rel=1e-5)
