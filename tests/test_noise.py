"""The reparameterisation noise: N(0, I) from either generator, stateless, and the XLA choice."""
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae import noise


def test_algorithm_choice():
    assert noise.algorithm(True) == noise.THREEFRY
    assert noise.algorithm(False) == noise.DEFAULT


@pytest.mark.parametrize("jit, alg", [(False, noise.DEFAULT), (True, noise.THREEFRY),
                                      (True, noise.DEFAULT)])
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


def test_xla_train_step_draws_with_threefry(monkeypatch):
    """An XLA-compiled train step asks for Threefry, a TF-graph one for the default."""
    import keras
    from tf_lvae.model_dir import build_model
    from tf_lvae.model_spec import ModelSpec

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
