"""The hierarchical model: shapes, the LVAE merge, analytic KL vs Monte-Carlo, bound relations."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.evaluation.likelihood import evaluate_images
from tf_lvae.model import noise
from tf_lvae.training.train_step import build_model
from tf_lvae.model.spec import ModelSpec

LATENT = (12, 10, 8, 6, 4)
HIDDEN = (40, 32, 24, 16, 8)


def _spec(num_layers, inference, **overrides):
    return ModelSpec(image_shape=(6, 6, 1), latent_sizes=LATENT[:num_layers],
                     hidden_sizes=HIDDEN[:num_layers], inference=inference, **overrides)


def _binary_images(n, seed=0, shape=(6, 6, 1)):
    return (np.random.default_rng(seed).random((n, *shape)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("inference", ["lvae", "vae"])
@pytest.mark.parametrize("num_layers", [1, 2, 3, 4, 5])
def test_shapes_for_every_depth_and_inference_model(num_layers, inference):
    model = build_model(_spec(num_layers, inference))
    images = _binary_images(3)
    x = model.flatten_images(images)
    terms = model.evaluate_terms(x, num_samples=4)
    assert terms["log_px"].shape == (12,)
    assert terms["log_pz_minus_log_qz"].shape == (12,)
    assert [kl.shape for kl in terms["kl_per_unit"]] == [(12, d) for d in LATENT[:num_layers]]
    assert model.log_weights(x, 5).shape == (5, 3)
    encoded = model.encode(images)
    assert [tuple(mean.shape) for mean, _ in encoded] == [(3, d) for d in LATENT[:num_layers]]
    assert all(np.all(stddev.numpy() > 0) for _, stddev in encoded)
    assert model(images).shape == (3, 6, 6, 1)
    samples = model.sample(7, seed=3)
    assert samples.shape == (7, 6, 6, 1)
    assert np.all((samples.numpy() >= 0) & (samples.numpy() <= 1))
    up_stats = model.bottom_up(x)
    assert len(up_stats) == (num_layers if inference == "lvae" else 1)


@pytest.mark.parametrize("inference", ["lvae", "vae"])
def test_seeded_draws_are_mean_plus_scale_times_the_layer_noise(inference):
    """z_i = mean + stddev * noise.layer_normal(shape, seed, i) under every generator callers
    choose; a bare int32 seed draws as noise.Seeded(seed)."""
    model = build_model(_spec(3, inference))
    x = model.flatten_images(_binary_images(4))
    up_stats = model.bottom_up(x)
    for algorithm in (noise.DEFAULT, noise.BOX_MULLER):
        seed = noise.Seeded(tf.constant(5), algorithm)
        for i, draw in enumerate(model.posterior_draws(up_stats, 2, seed=seed)):
            eps = noise.layer_normal(tf.shape(draw.z), seed, i)
            np.testing.assert_array_equal(draw.z,
                                          draw.posterior.loc + draw.posterior.scale * eps)
    bare = model.log_weights(x, 3, seed=tf.constant(5))
    np.testing.assert_array_equal(bare, model.log_weights(x, 3, seed=noise.Seeded(5)))
    box_muller = model.log_weights(x, 3, seed=noise.Seeded(5, noise.BOX_MULLER))
    assert np.abs(bare.numpy() - box_muller.numpy()).min() > 0


def test_lvae_posterior_is_the_precision_weighted_merge_of_upward_and_prior_terms():
    model = build_model(_spec(3, "lvae"))
    x = model.flatten_images(_binary_images(5))
    up_stats = model.bottom_up(x)
    draws = model.posterior_draws(up_stats, num_samples=1, deterministic=True)
    # Top layer: q(z_L | x) is the upward term itself and its prior is N(0, I).
    np.testing.assert_allclose(draws[-1].posterior.loc, up_stats[-1].loc, rtol=1e-6)
    np.testing.assert_allclose(draws[-1].prior.scale, 1.0)
    for i in range(2):
        prior = model.prior_given_parent(i, draws[i + 1].z)
        var_hat, var_p = up_stats[i].variance().numpy(), prior.variance().numpy()
        mean_hat, mean_p = up_stats[i].loc.numpy(), prior.loc.numpy()
        expected_var = var_hat * var_p / (var_hat + var_p)
        expected_mean = (mean_hat * var_p + mean_p * var_hat) / (var_hat + var_p)
        np.testing.assert_allclose(draws[i].posterior.variance(), expected_var, rtol=1e-4)
        np.testing.assert_allclose(draws[i].posterior.loc, expected_mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("inference", ["lvae", "vae"])
def test_analytic_kl_matches_monte_carlo_log_ratio(inference):
    model = build_model(_spec(3, inference))
    x = model.flatten_images(_binary_images(4))
    samples = 20_000
    terms = model.evaluate_terms(x, num_samples=samples)
    analytic = tf.add_n([tf.reduce_sum(kl, -1) for kl in terms["kl_per_unit"]])
    analytic = tf.reshape(analytic, [samples, -1]).numpy().mean(axis=0)
    monte_carlo = -tf.reshape(terms["log_pz_minus_log_qz"], [samples, -1]).numpy()
    standard_error = monte_carlo.std(axis=0) / np.sqrt(samples)
    assert np.all(np.abs(analytic - monte_carlo.mean(axis=0)) < 4 * standard_error + 1e-3)


def test_sampling_is_reproducible_by_seed_and_temperature_matters():
    model = build_model(_spec(3, "lvae"))
    first, again = model.sample(4, seed=11), model.sample(4, seed=11)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, model.sample(4, seed=12))
    assert not np.allclose(first, model.sample(4, temperature=0.5, seed=11))


@pytest.mark.parametrize("inference", ["lvae", "vae"])
def test_iw_bound_is_at_least_the_elbo_and_equals_it_for_one_sample(inference):
    model = build_model(_spec(2, inference))
    images = _binary_images(64, seed=5)
    options = dict(iw_batch_size=64, verbose=0, seed=1, jit_compile=False)
    k1 = evaluate_images(model, images, iw_samples=1, chunk_size=1, **options)
    k200 = evaluate_images(model, images, iw_samples=200, chunk_size=100, **options)
    # L_1 from log weights and the ELBO with analytic KL estimate the same number.
    x = model.flatten_images(images)
    per_draw = tf.reshape(model.log_weights(x, 400), [-1]).numpy()
    tolerance = 4 * per_draw.std() / np.sqrt(64) + 0.5
    assert k1["iw_bound"] == pytest.approx(k1["elbo"], abs=tolerance)
    assert k200["iw_bound"] > k200["elbo"] + 0.5
    assert k200["iw_bound"] >= k1["iw_bound"]


def _linear_gaussian_model():
    """One latent layer, identity activations, constant output variance: x = A z + c + noise.

    Its exact marginal is log p(x) = log N(x; c, A A^T + diag(noise_var)).
    """
    spec = ModelSpec(image_shape=(1, 3, 1), latent_sizes=(2,), hidden_sizes=(4,),
                     inference="lvae", likelihood="gaussian", activation="linear",
                     batch_norm=False)
    keras.utils.set_random_seed(0)
    model = build_model(spec)
    # Proposal q(z | x) = p(z) = N(0, I): far from the posterior at K = 1, yet a proposal
    # whose importance weights are bounded, so L_K converges quickly as K grows.
    encoder = model.up_heads[0].dense
    encoder.kernel.assign(tf.zeros_like(encoder.kernel))
    encoder.bias.assign([0.0, 0.0] + [float(np.log(np.expm1(1.0 - spec.variance_floor)))] * 2)
    head = model.observation.head.dense
    kernel, bias = head.kernel.numpy(), head.bias.numpy()
    kernel[:, 3:] = 0.0                     # variance independent of z
    bias[3:] = [-0.5, 0.2, 0.8]
    head.kernel.assign(kernel)
    head.bias.assign(bias)
    decode_mean = lambda z: model.decode(tf.constant(z, tf.float32)).loc.numpy()
    offset = decode_mean(np.zeros((1, 2)))[0]
    loading = np.stack([decode_mean(np.eye(2)[i:i + 1])[0] - offset for i in range(2)], axis=1)
    noise_var = model.decode(tf.zeros([1, 2])).variance().numpy()[0]
    return model, loading, offset, noise_var


def test_iw_bound_closes_in_on_the_exact_log_likelihood_of_a_linear_gaussian_model():
    from scipy.stats import multivariate_normal
    model, loading, offset, noise_var = _linear_gaussian_model()
    covariance = loading @ loading.T + np.diag(noise_var)
    rng = np.random.default_rng(0)
    x = rng.multivariate_normal(offset, covariance, size=40).astype(np.float32)
    exact = multivariate_normal(offset, covariance).logpdf(x).mean()
    images = x.reshape(-1, 1, 3, 1)
    gaps = {k: exact - evaluate_images(model, images, iw_samples=k, chunk_size=1000,
                                       iw_batch_size=40, verbose=0, seed=k)["iw_bound"]
            for k in (1, 10, 5000)}
    assert gaps[1] > 0.2                   # a random encoder leaves a clear gap at K = 1
    assert gaps[1] > gaps[10] > gaps[5000] > -0.02
    assert gaps[5000] < 0.03


def test_evaluation_is_reproducible_by_seed():
    model = build_model(_spec(2, "lvae"))
    images = _binary_images(30, seed=7)
    options = dict(iw_samples=50, chunk_size=20, iw_batch_size=16, verbose=0)
    first = evaluate_images(model, images, seed=3, **options)
    again = evaluate_images(model, images, seed=3, **options)
    other = evaluate_images(model, images, seed=4, **options)
    assert (first["elbo"], first["iw_bound"]) == (again["elbo"], again["iw_bound"])
    assert first["kl_per_unit"] == again["kl_per_unit"]
    assert first["iw_bound"] != other["iw_bound"]


def test_evaluation_progress_in_logs_shows_the_running_bound(capsys):
    # verbose=2 (logs): a line after the first batch and one at the end (the 30 s interval
    # holds back the one between), each with the running mean of L_K as it stands.
    model = build_model(_spec(2, "lvae"))
    images = _binary_images(30, seed=8)
    options = dict(iw_samples=20, chunk_size=20, iw_batch_size=10, seed=2, jit_compile=False)
    first_batch = evaluate_images(model, images[:10], verbose=0, **options)
    result = evaluate_images(model, images, verbose=2, **options)
    lines = [line for line in capsys.readouterr().out.splitlines() if "/30" in line]
    assert len(lines) == 2
    assert lines[0].startswith("10/30 examples: L_K " + f"{first_batch['iw_bound']:.4f}")
    assert lines[1].startswith("30/30 examples: L_K " + f"{result['iw_bound']:.4f}")


def test_progress_lines_estimate_the_time_left_from_the_batches_after_the_first(
        monkeypatch, capsys):
    # The first batch also compiles the bound: 10 s for 10 examples, then 2 s per 10.
    clock = iter([0.0, 10.0, 12.0, 14.0])
    monkeypatch.setattr(evaluation.time, "time", lambda: next(clock))
    progress = evaluation._ProgressLines(40, interval=0.0)
    for _ in range(3):
        progress.add(10, [("L_K", -90.0)])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "10/40 examples: L_K -90.0000 nats (running mean), 10 s elapsed",
        "20/40 examples: L_K -90.0000 nats (running mean), 12 s elapsed, ~4 s left",
        "30/40 examples: L_K -90.0000 nats (running mean), 14 s elapsed, ~2 s left"]
