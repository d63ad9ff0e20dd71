"""Tests of tf_lvae.generation: per-layer temperatures, keep-the-top, interpolation, seeding.

Tiny untrained models (3 layers, widths <= 16, 6x6 images): the properties tested are exact
identities of the maths (rows independent, k = 1 is the reconstruction, temperature 0 is the
prior mean, ...), which hold for any weights.
"""
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.model import generation
from tf_lvae.training.train_step import build_model
from tf_lvae.model.spec import ModelSpec

LATENT, HIDDEN = (4, 3, 2), (16, 8, 8)
NUM_LAYERS = len(LATENT)
# Pixels are sigmoids (slope <= 1/4) of logits computed through at most 3 dense layers per
# mapping and 2L mappings. A float32 dot product of n terms rounds to within n * eps * sum|terms|
# (Higham's bound); with unit-scale activations and widths <= 16 that is 16 * eps per layer.
# The same maths on different batch sizes may round differently (other matmul kernels), within
# this bound; a wrong seed or a row mixed with another changes these untrained models' pixels
# by 1e-3 to 0.4.
ATOL = 16 * np.finfo(np.float32).eps * 3 * 2 * NUM_LAYERS


@pytest.fixture(scope="module", params=["lvae", "vae"])
def model(request):
    tf.keras.utils.set_random_seed(1)
    spec = ModelSpec(image_shape=(6, 6, 1), latent_sizes=LATENT, hidden_sizes=HIDDEN,
                     inference=request.param)
    return build_model(spec)


@pytest.fixture(scope="module")
def images():
    return (np.random.default_rng(0).random([4, 6, 6, 1]) > 0.5).astype(np.float32)


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=ATOL)


def _differ(a, b):
    """True when a and b differ by more than 10x the rounding bound: really different."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) > 10 * ATOL


def test_row_noise_depends_on_the_row_seed_and_layer_only():
    noises = generation.row_noise(tf.constant([5, 9, 5]), LATENT)
    assert [n.shape.as_list() for n in noises] == [[3, 4], [3, 3], [3, 2]]
    for layer, noise in enumerate(noises):
        np.testing.assert_array_equal(noise[0], noise[2])               # same seed
        np.testing.assert_array_equal(                                  # alone in its batch
            noise[1], generation.row_noise(tf.constant([9]), LATENT)[layer][0])
        np.testing.assert_array_equal(                                  # as model.sample draws
            noise[1], tf.random.stateless_normal([1, LATENT[layer]], seed=[9, layer])[0])
        assert _differ(noise[0], noise[1])


def test_sample_rows_are_model_sample_with_their_seed(model):
    images = generation.sample(model, [3, 7], 0.8)
    assert images.shape == (2, 6, 6, 1)
    _close(images[0:1], model.sample(1, 0.8, 3))
    _close(images[1:2], model.sample(1, 0.8, 7))
    _close(generation.sample(model, [3, 7], 0.8), images)            # same seeds, same images
    assert _differ(images[0], images[1])


def test_per_layer_temperatures_scale_each_layers_noise(model):
    seeds = tf.constant([1, 2, 3])
    temperatures = [[0.5, 1.0, 0.0]]                                   # z_1, z_2, z_3
    eps = generation.row_noise(seeds, LATENT)
    expected = model.decode_noise([t * e for t, e in zip(temperatures[0], eps)], 1.0)
    _close(generation.sample(model, seeds, temperatures), expected)
    per_row = [[0.5, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 2.0]]
    rows = generation.sample(model, seeds, per_row)
    for r in range(3):
        _close(rows[r:r + 1], generation.sample(model, seeds[r:r + 1], [per_row[r]]))
    # a [B] temperature is one temperature per row, for every layer
    _close(generation.sample(model, seeds, [0.5, 1.0, 2.0])[2:],
           model.sample(1, 2.0, 3))


def test_zero_temperature_everywhere_is_the_prior_mean_image(model):
    means = generation.sample(model, [4, 11], 0.0)
    zeros = [tf.zeros([1, size]) for size in LATENT]
    _close(means[0:1], model.decode_noise(zeros))
    _close(means[1], means[0])                                         # no noise left
    assert _differ(generation.sample(model, [4], 1.0), means[0:1])


def test_keep_top_with_k_1_is_the_reconstruction(model, images):
    kept = generation.keep_top(model, images, 1, [0, 1, 2, 3])
    _close(kept, model(images, training=False))
    _close(generation.keep_top(model, images, 1, [7, 7, 7, 7], 2.0), kept)  # nothing redrawn


def test_keep_top_redraws_only_below_k(model, images):
    seeds = [0, 1, 2, 3]
    top_only = generation.keep_top(model, images, NUM_LAYERS, seeds)
    again = generation.keep_top(model, images, NUM_LAYERS, seeds)
    _close(again, top_only)
    assert _differ(generation.keep_top(model, images, NUM_LAYERS, [4, 5, 6, 7]), top_only)
    # at temperature 0 the layers below k are the prior means given the kept layers: the
    # interpolation at weight 0, whatever the second image
    for k in range(1, NUM_LAYERS + 1):
        _close(generation.keep_top(model, images, k, seeds, 0.0),
               generation.interpolate(model, images, images[::-1], k, 0.0))


def test_interpolation_endpoints_at_layer_1_are_the_reconstructions(model, images):
    a, b = images[:2], images[2:]
    _close(generation.interpolate(model, a, b, 1, 0.0), model(a, training=False))
    _close(generation.interpolate(model, a, b, 1, 1.0), model(b, training=False))
    middle = generation.interpolate(model, a, b, NUM_LAYERS, 0.5)
    assert _differ(middle, generation.interpolate(model, a, b, NUM_LAYERS, 0.0))


def test_rows_do_not_depend_on_the_other_rows(model, images):
    """Each function on a batch equals itself on every row alone (mixed layers per row)."""
    seeds = tf.constant([10, 11, 12, 13])
    layer = tf.constant([1, 2, 3, 2])
    temperature = tf.constant([1.0, 0.5, 1.5, 0.7])
    weight = tf.constant([0.0, 0.3, 0.6, 1.0])
    batched = dict(
        sample=generation.sample(model, seeds, temperature),
        keep_top=generation.keep_top(model, images, layer, seeds, temperature),
        interpolate=generation.interpolate(model, images, images[::-1], layer, weight))
    other = images[::-1]
    for r in range(4):
        rows = slice(r, r + 1)
        alone = dict(
            sample=generation.sample(model, seeds[rows], temperature[rows]),
            keep_top=generation.keep_top(model, images[rows], layer[rows], seeds[rows],
                                         temperature[rows]),
            interpolate=generation.interpolate(model, images[rows], other[rows], layer[rows],
                                               weight[rows]))
        for name in batched:
            _close(batched[name][rows], alone[name])


def test_bad_arguments_are_refused(model, images):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer must be in \[1, 3\]"):
        generation.keep_top(model, images, 0, [0, 1, 2, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer must be in \[1, 3\]"):
        generation.interpolate(model, images, images, NUM_LAYERS + 1, 0.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be finite"):
        generation.sample(model, [0, 1], [1.0, -0.5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature must be finite"):
        generation.sample(model, [0, 1], np.inf)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"weight must be in \[0, 1\]"):
        generation.interpolate(model, images, images, 1, 1.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="images_b must have the batch"):
        generation.interpolate(model, images, images[:2], 1, 0.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one row per image"):
        generation.keep_top(model, images, 1, [0, 1])
    with pytest.raises(ValueError, match="temperature must be a scalar"):
        generation.sample(model, [0], np.ones([1, 3, 1]))


def test_grids_hold_keep_top_and_interpolate_for_every_layer(model, images):
    from tf_lvae.analysis import figures
    redraws = generation.keep_top_grid(model, images[:2], 3, seed=5)
    assert redraws.shape == (2, NUM_LAYERS, 3, 6, 6, 1)
    for k in range(1, NUM_LAYERS + 1):
        _close(redraws[1, k - 1],
               generation.keep_top(model, np.repeat(images[1:2], 3, 0), k, [5, 6, 7]))
    paths = generation.interpolation_grid(model, images[:2], images[2:], 4)
    assert paths.shape == (2, NUM_LAYERS, 4, 6, 6, 1)
    _close(paths[0, 1], generation.interpolate(model, np.repeat(images[:1], 4, 0),
                                               np.repeat(images[2:3], 4, 0), 2,
                                               [0.0, 1 / 3, 2 / 3, 1.0]))
    keep_figure = figures.keep_top_figure(images[:2], redraws.numpy())
    assert len(figures.panel_axes(keep_figure)) == 2
    labels = [t.get_text() for t in keep_figure.axes[0].get_yticklabels()]
    assert labels == ["keep $z_{1}$..$z_{3}$", "keep $z_{2}$..$z_{3}$", "keep $z_{3}$"]
    path_figure = figures.interpolation_figure(images[:2], images[2:], paths.numpy())
    assert len(figures.panel_axes(path_figure)) == 2
    shown = path_figure.axes[0].get_images()[0].get_array()      # a, 4 steps, b per row
    assert shown.shape == (NUM_LAYERS * 7 + 1, 6 * 7 + 1)
