"""Tests of NORB as the authors prepared it and of dequantized data sets (NORB, dequantized MNIST).

* The 96 -> 32 resize against independent references: PIL's and TensorFlow's antialiased
  bicubic (inside the image, and on the mirror-padded image everywhere) and closed forms.
* Dequantization x = (k + u) / 256: bins, the fixed draws of `load_arrays`, the per-epoch draws
  of `make_dataset`.
* smallnorb through the real TFDS builder under `tfds.testing.mock_data`; real MNIST files from
  `shared/data` (skipped where absent).

Tolerances: resize values are at most 255 and each output is two passes of <= 14-tap dot
products whose weights have L1 norm `L1` (~1.15): a float32 evaluation (PIL, TensorFlow) is
then within 2 * 14 * eps32 * 255 * L1^2 of the exact value (the textbook dot-product bound,
whatever the summation order or FMA use), about 1e-3 grey levels, while a different kernel,
no antialiasing or another edge rule move pixels by whole grey levels.
"""
import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_lvae import data, experiment_config
from tf_lvae.data import dequantization, idx_files, norb
from tf_lvae.configs import mnist_dequantized as mnist_dequantized_config
from tf_lvae.configs import norb as norb_config

EPS32 = np.finfo(np.float32).eps
W = norb.resize_weights()
L1 = np.abs(W).sum(axis=1).max()
RESIZE_TOL = 2 * 14 * EPS32 * 255 * L1 ** 2
INSIDE = slice(2, 30)  # outputs whose kernel (input 3i + 1 +- 5) stays inside the image


def _shared_mnist():
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data" / "mnist").is_dir():
            return parent / "shared" / "data" / "mnist"
    return None


MNIST_DIR = _shared_mnist()
needs_mnist = pytest.mark.skipif(MNIST_DIR is None, reason="no shared MNIST")


@pytest.fixture(autouse=True)
def _no_manual_dir(monkeypatch):
    monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def noise_images():
    return np.random.default_rng(0).integers(0, 256, (3, 96, 96)).astype(np.float64)


def _exact_resize(images):
    """float64 [B, 96, 96] -> [B, 32, 32], before rounding."""
    return W @ images @ W.T


def _pil_bicubic(image, size):
    from PIL import Image
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((size, size),
                                                                      Image.BICUBIC))


def _tf_bicubic(images, size):
    return tf.image.resize(images[..., None].astype(np.float32), (size, size), method="bicubic",
                           antialias=True).numpy()[..., 0]


# ---------------------------------------------------------------- the 96 -> 32 resize

def test_resize_weights_are_the_antialiased_keys_kernel():
    assert W.shape == (32, 96)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    # Inside, output 16 sits at input 49: weights cubic(d / 3) / 3 for d = -5..5 (Keys, a = -0.5,
    # stretched by 3); the kernel's partition of unity makes them sum to 1 unnormalized.
    d = np.arange(-5, 6) / 3
    a = np.abs(d)
    cubic = np.where(a <= 1, 1.5 * a ** 3 - 2.5 * a ** 2 + 1,
                     -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2)
    np.testing.assert_allclose(W[16, 44:55], cubic / 3, rtol=0, atol=1e-15)
    assert np.count_nonzero(W[16]) == 9 and W[16, 46] == W[16, 52] == 0.0  # cubic(+-1) = 0
    # Edge: output 0 sits at input 1; taps -4..-1 fold back onto 3..0 (edge pixel repeated).
    folded = np.zeros(96)
    np.add.at(folded, np.abs(np.arange(-4, 7) + 0.5).astype(int), W[16, 44:55])
    np.testing.assert_allclose(W[0], folded, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="downsamples"):
        norb.resize_weights(32, 96)


def test_resize_matches_pil_and_tensorflow_inside(noise_images):
    exact = _exact_resize(noise_images)
    pil = np.stack([_pil_bicubic(image, 32) for image in noise_images])
    tf_aa = _tf_bicubic(noise_images, 32)
    for reference in (pil, tf_aa):
        np.testing.assert_allclose(reference[:, INSIDE, INSIDE], exact[:, INSIDE, INSIDE],
                                   rtol=0, atol=RESIZE_TOL)
        # They renormalize the kernel at the edge instead of mirroring: visibly different there.
        assert np.abs(reference - exact)[:, :2].max() > 1.0
    no_antialias = tf.image.resize(noise_images[..., None].astype(np.float32), (32, 32),
                                   method="bicubic", antialias=False).numpy()[..., 0]
    assert np.abs(no_antialias - exact)[:, INSIDE, INSIDE].max() > 20  # aliasing


def test_resize_matches_pil_on_the_mirrored_image_everywhere(noise_images):
    # MATLAB's edge rule is symmetric padding: on the image padded by 6 = two output pixels,
    # every output of ours is an inside output of PIL's and TensorFlow's resize 108 -> 36.
    padded = np.pad(noise_images, ((0, 0), (6, 6), (6, 6)), mode="symmetric")
    exact = _exact_resize(noise_images)
    pil = np.stack([_pil_bicubic(image, 36) for image in padded])[:, 2:34, 2:34]
    np.testing.assert_allclose(pil, exact, rtol=0, atol=RESIZE_TOL)
    np.testing.assert_allclose(_tf_bicubic(padded, 36)[:, 2:34, 2:34], exact, rtol=0,
                               atol=RESIZE_TOL)


def test_resize_closed_forms():
    constant = np.full((1, 96, 96, 1), 77, np.uint8)
    np.testing.assert_array_equal(norb.resize(constant), np.float32(77 / 255))
    # Keys' cubic reproduces linear functions: a ramp 2j + 10 becomes 2(3j + 1) + 10 inside.
    ramp = np.broadcast_to(2 * np.arange(96) + 10, (2, 96, 96))[..., None]
    small = norb.resize(ramp)
    assert small.shape == (2, 32, 32, 1) and small.dtype == np.float32
    expected = (6 * np.arange(32) + 12)[INSIDE] / 255
    np.testing.assert_array_equal(small[0, INSIDE, INSIDE, 0],
                                  np.broadcast_to(expected.astype(np.float32), (28, 28)))
    # A hard 0 / 255 edge overshoots (negative lobes); levels are clipped to 0..255 and rounded.
    step = np.zeros((1, 96, 96, 1), np.uint8)
    step[:, :, 47:] = 255
    overshoot = _exact_resize(step[..., 0].astype(np.float64))
    assert overshoot.max() > 255.5 and overshoot.min() < -0.5
    levels = norb.resize(step) * 255
    assert levels.min() == 0 and levels.max() == 255
    np.testing.assert_allclose(levels, np.rint(levels), rtol=0, atol=255 * EPS32)
    with pytest.raises(ValueError, match=r"\[B, 96, 96, 1\]"):
        norb.resize(np.zeros((2, 96, 96, 2)))


# ---------------------------------------------------------------- dequantization

def test_dequantize_keeps_every_level_in_its_bin():
    levels = np.arange(256, dtype=np.float32)
    below_one = np.float32(1 - 2.0 ** -24)  # the largest float32 uniform
    for images in (levels / 255, (levels + 0.5) / 256):  # either representation of a level
        np.testing.assert_array_equal(dequantization.grey_levels(images), levels)
        for u in (0.0, 0.5, below_one):
            x = dequantization.dequantize(images, np.full(256, u, np.float32))
            assert x.dtype == np.float32 and 0 <= x.min() and x.max() < 1
            np.testing.assert_array_equal(np.floor(x * 256), levels)
            in_tf = dequantization.dequantize(tf.constant(images), tf.fill([256], u),
                                              xp=tf.math)
            np.testing.assert_array_equal(in_tf.numpy(), x)  # the same arithmetic
    np.testing.assert_array_equal(dequantization.dequantize(levels / 255, np.float32(0.5)),
                                  (levels + 0.5) / 256)


def _epoch(ds):
    return np.concatenate([batch.numpy() for batch in ds])


def test_pipeline_dequantizes_each_epoch_reproducibly():
    spec = data.get_spec("mnist_dequantized")
    # Example i is the constant grey level i, stored as i / 255: after any shuffle, each
    # example's pixels must all lie in one bin and the bins must be 0..255 once each.
    images = np.broadcast_to((np.arange(256, dtype=np.float32) / 255)[:, None, None, None],
                             (256, 28, 28, 1)).copy()

    def epoch(e, seed=3):
        return _epoch(data.make_dataset(images, spec, 64, shuffle=True, seed=seed, epoch=e))

    first = epoch(0)
    bins = np.floor(first * 256)
    assert (bins == bins[:, :1, :1]).all()
    np.testing.assert_array_equal(np.sort(bins[:, 0, 0, 0]), np.arange(256))
    assert first.min() >= 0 and first.max() < 1
    np.testing.assert_array_equal(first, epoch(0))  # epoch e of seed s is always the same
    assert (first != epoch(1)).mean() > 0.99 and (first != epoch(0, seed=4)).mean() > 0.99
    # The noise is U[0, 1) within the bin: 200k draws give its mean a std of 0.0006.
    assert abs((first * 256 - bins).mean() - 0.5) < 0.003
    # Without `epoch=`: every iteration is a new epoch, reproducible from the seed.
    ds = data.make_dataset(images, spec, 64, shuffle=True, seed=3)
    again = data.make_dataset(images, spec, 64, shuffle=True, seed=3)
    one, two = _epoch(ds), _epoch(ds)
    assert (one != two).mean() > 0.99
    np.testing.assert_array_equal(one, _epoch(again))
    np.testing.assert_array_equal(two, _epoch(again))
    # Evaluation (no shuffle): the images as given, in order.
    np.testing.assert_array_equal(_epoch(data.make_dataset(images, spec, 64)), images)


def test_configs_use_the_gaussian_likelihood():
    norb_spec = experiment_config.model_spec(norb_config.get_config())
    assert (norb_spec.image_shape, norb_spec.likelihood, norb_spec.activation) == (
        (32, 32, 1), "gaussian", "tanh")
    mnist_spec = experiment_config.model_spec(mnist_dequantized_config.get_config())
    assert (mnist_spec.image_shape, mnist_spec.likelihood) == ((28, 28, 1), "gaussian")
    for name in ("norb", "mnist_dequantized"):
        assert data.get_spec(name).binarization == "dequantize"
        assert data.get_spec(name).binarization in data.BINARIZATIONS


# ---------------------------------------------------------------- NORB via TFDS

def _mock_left_images(tfds_dir, split):
    builder = tfds.builder(norb.TFDS_NAME, data_dir=str(tfds_dir))
    batches = tfds.as_numpy(builder.as_dataset(split=split, batch_size=64, shuffle_files=False))
    return [(b["image"], b["image2"]) for b in batches]


def test_norb_with_mock_tfds(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        train, y_train = data.load_arrays("norb", "train", data_dir=tmp_path, num_validation=4)
        valid, _ = data.load_arrays("norb", "validation", data_dir=tmp_path, num_validation=4)
        everything, _ = data.load_arrays("norb", "train+validation", tmp_path, num_validation=4)
        test, y_test = data.load_arrays("norb", "test", data_dir=tmp_path, num_validation=4)
        (left, right), = _mock_left_images(tmp_path, "train")
        (test_left, _), = _mock_left_images(tmp_path, "test")
    assert train.shape == (8, 32, 32, 1) and valid.shape == (4, 32, 32, 1)
    assert test.shape == (12, 32, 32, 1) and train.dtype == np.float32
    assert y_train.dtype == np.int32 and 0 <= y_test.min() and y_test.max() <= 4
    np.testing.assert_array_equal(everything, np.concatenate([train, valid]))
    noise = {}
    for split, images, source in (("train", everything, left), ("test", test, test_left)):
        assert 0 <= images.min() and images.max() < 1
        levels = np.floor(images * 256)
        np.testing.assert_array_equal(levels / 255, norb.resize(source))  # the left camera
        noise[split] = images * 256 - levels
        # 12k U[0, 1) draws: mean 0.5 +- 0.003, std 0.289
        assert abs(noise[split].mean() - 0.5) < 0.02 and abs(noise[split].std() - 0.289) < 0.02
    assert not np.array_equal(np.floor(everything * 256) / 255, norb.resize(right))
    # Train and test draw their noise with different seeds (the mock's splits share images).
    np.testing.assert_array_equal(left, test_left)
    assert (noise["train"] != noise["test"]).mean() > 0.99


def test_norb_test_split_is_fixed(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        first = data.load_arrays("norb", "test", tmp_path, num_validation=2)[0].copy()
        data.clear_cache()  # recompute from the files, not just the cache
        second = data.load_arrays("norb", "test", tmp_path, num_validation=2)[0]
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="read-only"):
        second[0, 0, 0, 0] = 0.5


def test_norb_not_prepared(tmp_path, monkeypatch):
    with pytest.raises(data.DataNotFoundError, match="smallnorb-5x46789x9x18x6x2x96x96"):
        data.load_arrays("norb", "train", data_dir=tmp_path)
    monkeypatch.setenv(data.MANUAL_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="lacks"):
        data.load_arrays("norb", "train", data_dir=tmp_path)


# ---------------------------------------------------------------- dequantized MNIST

def test_mnist_dequantized_missing_files_name_the_data_set(tmp_path, monkeypatch):
    with pytest.raises(data.DataNotFoundError, match="mnist_dequantized.*train-images-idx3"):
        data.load_arrays("mnist_dequantized", "train", data_dir=tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # TFDS `mnist`, not prepared there
    with pytest.raises(data.DataNotFoundError, match="TFDS 'mnist' is not prepared"):
        data.load_arrays("mnist_dequantized", "test")


@needs_mnist
def test_real_mnist_dequantized():
    test, labels = data.load_arrays("mnist_dequantized", "test", data_dir=MNIST_DIR)
    assert test.shape == (10000, 28, 28, 1) and test.dtype == np.float32
    assert 0 <= test.min() and test.max() < 1 and labels.shape == (10000,)
    grey = idx_files.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(np.floor(test[..., 0] * 256), grey)
    noise = test * 256 - np.floor(test * 256)
    assert abs(noise.mean() - 0.5) < 0.002  # 7.8M U[0, 1) draws: std 0.0001
    validation, _ = data.load_arrays("mnist_dequantized", "validation", data_dir=MNIST_DIR)
    everything, _ = data.load_arrays("mnist_dequantized", "train+validation", MNIST_DIR)
    np.testing.assert_array_equal(validation, everything[-10000:])
    with gzip.open(MNIST_DIR / "train-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read(16 + 784), np.uint8)[16:].reshape(28, 28)
    np.testing.assert_array_equal(np.floor(everything[0, ..., 0] * 256), first)
    data.clear_cache()
    np.testing.assert_array_equal(data.load_arrays("mnist_dequantized", "test", MNIST_DIR)[0],
                                  test)
