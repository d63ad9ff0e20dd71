"""The reparameterisation noise: N(0, I) from each generator, stateless, and the XLA choice."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.model import noise


def test_algorithm_choice():
    assert noise.algorithm(True) == noise.THREEFRY
    assert noise.algorithm(False) == noise.DEFAULT


def test_seeded_is_the_one_noise_argument():
    """A bare int32 seed means Seeded(seed), the default generator; None the global RNG."""
    assert noise.Seeded(3) == noise.Seeded(3, noise.DEFAULT)
    assert noise.seeded(None) is None and noise.layer_seed(None, 0) is None
    assert noise.seeded(3) == noise.Seeded(3)
    key = noise.Seeded(3, noise.BOX_MULLER)
    assert noise.seeded(key) is key


@pytest.mark.parametrize("jit, alg", [(False, noise.DEFAULT), (True, noise.THREEFRY),
                                      (False, noise.BOX_MULLER)])
def test_layer_noise_draws_from_the_seed_and_layer_pair(jit, alg):
    """Layer i of a pass seeded by s draws from the pair [s, i] with the pass's generator:
    the numbers that exact resume and repeated evaluations rely on. A Seeded value passes
    through tf.function (the seed as a tensor input)."""
    layer_normal = tf.function(lambda key, layer: noise.layer_normal([4, 3], key, layer),
                               jit_compile=jit)
    pair = tf.function(lambda: noise.standard_normal([4, 3], tf.constant([7, 2]), alg),
                       jit_compile=jit)
    key = noise.Seeded(tf.constant(7), alg)
    eps = layer_normal(key, 2)
    np.testing.assert_array_equal(eps, pair())
    if alg == noise.DEFAULT:  # a bare seed is the default generator
        np.testing.assert_array_equal(layer_normal(tf.constant(7), 2), eps)
    assert np.abs(eps.numpy() - layer_normal(key, 1).numpy()).min() > 0


@pytest.mark.parametrize("jit, alg", [(False, noise.DEFAULT), (True, noise.THREEFRY),
                                      (True, noise.DEFAULT), (False, noise.BOX_MULLER),
                                      (True, noise.BOX_MULLER)])
def test_seeded_noise_is_standard_normal(jit, alg):
    """Moments of 200k draws within 5 standard errors of N(0, 1): mean, variance, kurtosis."""
    draw = tf.function(lambda seed: noise.standard_normal([1000, 200], seed, alg),
                       jit_compile=jit)
    eps = draw(tf.constant([3, 4])).numpy().ravel()
    n = eps.size
    assert abs(eps.mean()) < 5 / np.sqrt(n)
    assert abs(eps.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(np.mean(eps ** 4) - 3.0) < 5 * np.sqrt(96.0 / n)
    # independent coordinates: the correlation of neighbouring units is ~0
    pairs = eps.reshape(-1, 2)
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 5 / np.sqrt(n / 2)


def test_seeded_noise_is_a_function_of_the_seed():
    draw = tf.function(lambda seed: noise.standard_normal([64, 8], seed, noise.THREEFRY),
                       jit_compile=True)
    first, again = draw(tf.constant([1, 2])), draw(tf.constant([1, 2]))
    other = draw(tf.constant([1, 3]))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.numpy() - other.numpy()).min() > 0


def test_threefry_differs_from_the_default_stream():
    """The generators are distinct streams: XLA runs do not repeat graph runs' numbers."""
    seed = tf.constant([5, 6])
    xla = tf.function(lambda s: noise.standard_normal([32], s, noise.THREEFRY),
                      jit_compile=True)(seed)
    default = noise.standard_normal([32], seed, noise.DEFAULT)
    assert not np.allclose(xla, default)


@pytest.mark.slow
def test_xla_train_step_draws_with_threefry(monkeypatch):
    """An XLA-compiled train step asks for Threefry, a TF-graph one for the default."""
    import keras
    from tf_lvae.training.train_step import build_model
    from tf_lvae.model.spec import ModelSpec

    seen = []
    original = noise.standard_normal

    def recording(shape, seed=None, alg=noise.DEFAULT, dtype=tf.float32):
        seen.append(alg)
        return original(shape, seed, alg, dtype)

    monkeypatch.setattr(noise, "standard_normal", recording)
    images = (np.random.default_rng(0).random((8, 6, 6, 1)) < 0.5).astype(np.float32)
    for jit, expected in [(True, noise.THREEFRY), (False, noise.DEFAULT)]:
        seen.clear()
        keras.utils.set_random_seed(0)
        model = build_model(ModelSpec(image_shape=(6, 6, 1), latent_sizes=(4, 2),
                                      hidden_sizes=(8, 8)))
        model.configure_objective(noise_seed=7)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        history = model.fit(images, epochs=1, batch_size=4, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert seen and set(seen) == {expected}


def test_sin_cos_of_turns_matches_numpy_in_every_quadrant():
    rng = np.random.default_rng(0)
    bits = np.concatenate([rng.integers(0, 2 ** 31, 100_000),
                           [0, 1, 2 ** 29 - 1, 2 ** 29, 2 ** 30, 3 * 2 ** 29, 2 ** 31 - 1]])
    bits = bits.astype(np.int32)
    sin, cos = tf.function(noise.sin_cos_of_turns, jit_compile=True)(tf.constant(bits))
    angle = 2 * np.pi * bits.astype(np.float64) / 2 ** 31
    np.testing.assert_allclose(sin, np.sin(angle), rtol=0, atol=5e-7)
    np.testing.assert_allclose(cos, np.cos(angle), rtol=0, atol=5e-7)


def test_box_muller_matches_the_normal_distribution():
    """Kolmogorov-Smirnov distance of 1M draws to N(0, 1) below the 0.1% critical value
    (1.95 / sqrt(n)), and each pair (r cos t, r sin t) uncorrelated in value and in square."""
    eps = noise.standard_normal([1_000_000], tf.constant([8, 9]), noise.BOX_MULLER)
    eps = np.sort(eps.numpy().astype(np.float64))
    n = eps.size
    cdf = 0.5 * (1 + np.vectorize(math.erf)(eps / math.sqrt(2)))
    distance = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert distance < 1.95 / np.sqrt(n)
    pairs = noise.standard_normal([500_000, 2], tf.constant([8, 10]),
                                  noise.BOX_MULLER).numpy().astype(np.float64)
    assert abs(np.corrcoef(pairs.T)[0, 1]) < 5 / np.sqrt(len(pairs))
    assert abs(np.corrcoef(pairs.T ** 2)[0, 1]) < 5 / np.sqrt(len(pairs))


def test_box_muller_draws_the_same_in_graph_eager_and_xla():
    """One stream wherever evaluation runs: eager, a TF graph with a run-time shape, XLA."""
    seed = tf.constant([3, 1])
    eager = noise.standard_normal([7, 5], seed, noise.BOX_MULLER)
    graph = tf.function(lambda rows: noise.standard_normal(tf.stack([rows, 5]), seed,
                                                           noise.BOX_MULLER))(tf.constant(7))
    xla = tf.function(lambda: noise.standard_normal([7, 5], seed, noise.BOX_MULLER),
                      jit_compile=True)()
    assert eager.shape == graph.shape == xla.shape == (7, 5)
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(eager, xla)
    other = noise.standard_normal([7, 5], tf.constant([3, 2]), noise.BOX_MULLER)
    assert np.abs(eager.numpy() - other.numpy()).min() > 0
    half = noise.standard_normal([7, 5], seed, noise.BOX_MULLER, dtype=tf.bfloat16)
    assert half.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(half, tf.float32), eager, rtol=1e-2, atol=1e-2)
