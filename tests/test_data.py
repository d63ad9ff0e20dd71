"""Tests of tf_lvae.data: registry, file parsers, splits, errors and the tf.data pipeline.

Real MNIST / Omniglot come from the `shared/data` folder next to the repository (developer
machines and CI); those tests skip where it is absent, e.g. in a user's fresh clone. NORB and
the dequantized data sets: tests/test_norb.py.
"""
import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_lvae import data
from tf_lvae.data import idx_files


def _shared_data():
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return None


SHARED = _shared_data()
MNIST_DIR = SHARED / "mnist" if SHARED else None
OMNIGLOT_DIR = SHARED / "omniglot" if SHARED else None
needs_mnist = pytest.mark.skipif(not (MNIST_DIR and MNIST_DIR.is_dir()), reason="no shared MNIST")
needs_omniglot = pytest.mark.skipif(not (OMNIGLOT_DIR and OMNIGLOT_DIR.is_dir()),
                                    reason="no shared Omniglot")


@pytest.fixture(autouse=True)
def _no_manual_dir(monkeypatch):
    monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)


def _write_idx(path, array, code=0x08, compress=True):
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _write_mnist_dir(folder, n_train=30, n_test=10, compress=True):
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, array in arrays.items():
        name = idx_files.FILES[key] if compress else idx_files.FILES[key][:-3]
        _write_idx(folder / name, array, compress=compress)
    return arrays


# ---------------------------------------------------------------- registry

def test_specs():
    assert data.DATASETS == ("mnist", "binarized_mnist", "omniglot", "norb", "fashion_mnist",
                             "mnist_dequantized")
    mnist, norb_spec = data.get_spec("mnist"), data.get_spec("norb")
    assert (mnist.image_shape, mnist.likelihood, mnist.binarization) == ((28, 28, 1), "bernoulli",
                                                                        "dynamic")
    assert (norb_spec.image_shape, norb_spec.likelihood, norb_spec.binarization) == (
        (32, 32, 1), "gaussian", "dequantize")
    assert all(data.get_spec(name).binarization in data.BINARIZATIONS for name in data.DATASETS)
    assert data.get_spec("binarized_mnist").binarization == "static"
    assert not data.get_spec("binarized_mnist").has_labels
    assert data.get_spec("omniglot").num_validation == 1345
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist.num_validation = 3


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; expected one of mnist, "):
        data.get_spec("cifar")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_arrays("cifar", "train")
    with pytest.raises(ValueError, match="unknown split"):
        data.load_arrays("binarized_mnist", "valid")


def test_default_data_dir():
    shipped = Path(data.default_data_dir("binarized_mnist"))
    assert (shipped / "binarized_mnist.npz").is_file()
    assert data.default_data_dir("mnist") is None and data.default_data_dir("omniglot") is None


# ---------------------------------------------------------------- binarized MNIST

def test_shipped_binarized_mnist():
    sizes = {"train": 50000, "validation": 10000, "test": 10000, "train+validation": 60000}
    for split, size in sizes.items():
        images, labels = data.load_arrays("binarized_mnist", split)
        assert images.shape == (size, 28, 28, 1) and images.dtype == np.float32
        assert labels is None
        assert set(np.unique(images)) == {0.0, 1.0}
        assert 0.1 < images.mean() < 0.16  # MNIST's share of ink
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0, 0] = 0.5  # the cache must not be corruptible


def test_amat_files(tmp_path):
    rng = np.random.default_rng(1)
    bits = {s: rng.integers(0, 2, (n, 784)) for s, n in (("train", 5), ("valid", 3), ("test", 2))}
    for split, rows in bits.items():
        text = "\n".join(" ".join(map(str, row)) for row in rows) + "\n"
        (tmp_path / f"binarized_mnist_{split}.amat").write_text(text)
    train, _ = data.load_arrays("binarized_mnist", "train", data_dir=tmp_path, num_validation=3)
    valid, _ = data.load_arrays("binarized_mnist", "validation", tmp_path, num_validation=3)
    test, _ = data.load_arrays("binarized_mnist", "test", data_dir=tmp_path, num_validation=3)
    np.testing.assert_array_equal(train.reshape(5, 784), bits["train"])
    np.testing.assert_array_equal(valid.reshape(3, 784), bits["valid"])
    np.testing.assert_array_equal(test.reshape(2, 784), bits["test"])
    (tmp_path / "binarized_mnist_test.amat").write_text("0 1 " * 391 + "0\n")  # 783 pixels
    data.clear_cache()
    with pytest.raises(data.DataFormatError, match="783 pixels"):
        data.load_arrays("binarized_mnist", "test", data_dir=tmp_path, num_validation=3)


# ---------------------------------------------------------------- idx files

@pytest.mark.parametrize("code,dtype", [(0x08, np.uint8), (0x0C, np.int32), (0x0D, np.float32)])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx(tmp_path, code, dtype, compress):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype)
    _write_idx(tmp_path / "a.idx", array, code=code, compress=compress)
    parsed = idx_files.read_idx(tmp_path / "a.idx")
    assert parsed.dtype == dtype and parsed.shape == (2, 3, 4)
    np.testing.assert_array_equal(parsed, array)


def test_corrupt_idx(tmp_path):
    _write_idx(tmp_path / "a.gz", np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "truncated.gz").write_bytes((tmp_path / "a.gz").read_bytes()[:-20])
    with pytest.raises(data.DataFormatError, match="truncated"):
        idx_files.read_idx(tmp_path / "truncated.gz")
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(data.DataFormatError, match=r"shape \(4, 28, 28\)"):
        idx_files.read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(data.DataFormatError, match="magic"):
        idx_files.read_idx(tmp_path / "magic")


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_from_small_idx_files(tmp_path, compress):
    arrays = _write_mnist_dir(tmp_path, compress=compress)
    train, y_train = data.load_arrays("mnist", "train", data_dir=tmp_path, num_validation=5)
    np.testing.assert_allclose(train[..., 0], arrays["train_images"][:25] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_train, arrays["train_labels"][:25])
    assert y_train.dtype == np.int32
    valid, y_valid = data.load_arrays("mnist", "validation", data_dir=tmp_path, num_validation=5)
    assert set(np.unique(valid)) <= {0.0, 1.0}  # evaluation splits are binarized once
    np.testing.assert_array_equal(y_valid, arrays["train_labels"][25:])
    everything, _ = data.load_arrays("fashion_mnist", "train", tmp_path, num_validation=0)
    assert everything.shape == (30, 28, 28, 1)
    with pytest.raises(ValueError, match="no validation split"):
        data.load_arrays("mnist", "validation", data_dir=tmp_path, num_validation=0)
    with pytest.raises(ValueError, match="num_validation"):
        data.load_arrays("mnist", "train", data_dir=tmp_path, num_validation=30)


def test_mnist_corrupt_file_is_named(tmp_path):
    _write_mnist_dir(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(data.DataFormatError, match="t10k-labels-idx1-ubyte.gz"):
        data.load_arrays("mnist", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- missing data

def test_missing_files_explain_data_dir(tmp_path, monkeypatch):
    with pytest.raises(data.DataNotFoundError, match="--data_dir") as error:
        data.load_arrays("mnist", "train", data_dir=tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(error.value) and str(tmp_path) in str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(data.DataNotFoundError, match="chardata.mat"):
        data.load_arrays("omniglot", "train")
    with pytest.raises(data.DataNotFoundError, match="binarized_mnist.npz"):
        data.load_arrays("binarized_mnist", "train", data_dir=tmp_path)
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_arrays("mnist", "train", data_dir=tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(data.DataNotFoundError, match="not a folder"):
        data.load_arrays("omniglot", "train", data_dir=tmp_path / "file")
    # No data_dir: TFDS, which is not prepared in an empty TFDS data dir.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="--data_dir"):
        data.load_arrays("mnist", "train")
    monkeypatch.setenv(data.MANUAL_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match="lacks train-images-idx3-ubyte.gz"):
        data.load_arrays("fashion_mnist", "test")


# ---------------------------------------------------------------- real data (shared/)

@needs_mnist
def test_real_mnist_splits():
    sizes = {"train": 50000, "validation": 10000, "test": 10000, "train+validation": 60000}
    for split, size in sizes.items():
        images, labels = data.load_arrays("mnist", split, data_dir=MNIST_DIR)
        assert images.shape == (size, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (size,) and labels.dtype == np.int32
        assert 0.0 == images.min() and images.max() == 1.0
        assert set(np.unique(labels)) == set(range(10))
    train, labels = data.load_arrays("mnist", "train", data_dir=MNIST_DIR)
    assert len(np.unique(train)) == 256  # intensities, not bits
    np.testing.assert_array_equal(labels[:5], [5, 0, 4, 1, 9])  # file order


@needs_mnist
def test_real_mnist_test_binarization_is_fixed():
    first, _ = data.load_arrays("mnist", "test", data_dir=MNIST_DIR)
    first = first.copy()
    data.clear_cache()  # recompute from the files, not just the cache
    second, _ = data.load_arrays("mnist", "test", data_dir=MNIST_DIR)
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(second)) == {0.0, 1.0}
    intensity = idx_files.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz") / 255.0
    assert abs(second.mean() - intensity.mean()) < 0.0005  # ~10 sigma of the Bernoulli noise
    assert 0.005 < np.abs(second[..., 0] - intensity).mean()  # really sampled, not copied


@needs_omniglot
def test_real_omniglot():
    sizes = {"train": 23000, "validation": 1345, "test": 8115, "train+validation": 24345}
    for split, size in sizes.items():
        images, labels = data.load_arrays("omniglot", split, data_dir=OMNIGLOT_DIR)
        assert images.shape == (size, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (size,) and 0 <= labels.min() and labels.max() <= 1622
        assert 0.0 <= images.min() and images.max() <= 1.0
    images, labels = data.load_arrays("omniglot", "train+validation", data_dir=OMNIGLOT_DIR)
    assert labels.min() == 0 and labels.max() == 1622
    assert 0.05 < images.mean() < 0.12  # strokes are 1 on a 0 background
    # Orientation (pixels are stored column-major): the first character's top stroke lies in
    # row 5, columns 13-16; a missing transpose would put it in column 5.
    assert (images[0, 5, 13:17, 0] > 0.5).all() and (images[0, 13:17, 5, 0] < 0.5).all()


# ---------------------------------------------------------------- pipeline

def _epoch(ds):
    return np.concatenate([batch.numpy() for batch in ds])


@pytest.fixture(scope="module")
def intensities():
    # Skewed (mean 1/4) so that thresholding at 0.5 instead of sampling would shift the mean.
    return (np.random.default_rng(0).random((600, 28, 28, 1)) ** 3).astype(np.float32)


def test_dynamic_binarization(intensities):
    spec = data.get_spec("mnist")
    ds = data.make_dataset(intensities, spec, 64, shuffle=True, seed=7)
    same = data.make_dataset(intensities, spec, 64, shuffle=True, seed=7)
    epoch1, epoch2 = _epoch(ds), _epoch(ds)
    assert epoch1.shape == (600, 28, 28, 1) and set(np.unique(epoch1)) == {0.0, 1.0}
    assert (epoch1 != epoch2).mean() > 0.2  # new order and new bits
    # With identical examples the order cannot matter: the epochs differ only if the bits
    # are redrawn each epoch (not just reused per batch position).
    clones = data.make_dataset(np.repeat(intensities[:1], 100, axis=0), spec, 64, shuffle=True)
    assert (_epoch(clones) != _epoch(clones)).mean() > 0.1
    np.testing.assert_array_equal(epoch1, _epoch(same))
    np.testing.assert_array_equal(epoch2, _epoch(same))
    other = _epoch(data.make_dataset(intensities, spec, 64, shuffle=True, seed=8))
    assert (other != epoch1).mean() > 0.3
    # E[bit] = intensity: 470k draws give the mean a std of ~0.0005 (thresholding: -0.044).
    assert abs(epoch1.mean() - intensities.mean()) < 0.003
    assert abs(np.concatenate([_epoch(ds) for _ in range(3)]).mean() - intensities.mean()) < 0.003


def test_repeat_gives_new_epochs(intensities):
    spec = data.get_spec("omniglot")
    clones = np.repeat(intensities[:1], 200, axis=0)  # identical examples: order cannot matter
    batches = iter(data.make_dataset(clones, spec, 100, shuffle=True, seed=1, repeat=True))
    epochs = [np.concatenate([next(batches).numpy() for _ in range(2)]) for _ in range(2)]
    assert (epochs[0] != epochs[1]).mean() > 0.1
    np.testing.assert_array_equal(
        epochs[0], _epoch(data.make_dataset(clones, spec, 100, shuffle=True, seed=1)))


def test_evaluation_and_static_pipelines(intensities):
    spec = data.get_spec("mnist")
    ordered = _epoch(data.make_dataset(intensities, spec, 64))
    np.testing.assert_array_equal(ordered, intensities)  # no shuffle: untouched, in order
    bits = (intensities > 0.5).astype(np.float32)
    static = data.make_dataset(bits, data.get_spec("binarized_mnist"), 64, shuffle=True, seed=0)
    shuffled = _epoch(static)
    assert not np.array_equal(shuffled, bits)
    np.testing.assert_array_equal(np.sort(shuffled.reshape(600, -1).sum(1)),
                                  np.sort(bits.reshape(600, -1).sum(1)))  # a permutation
    batches = data.make_dataset(bits, spec, 64, drop_remainder=True)
    assert batches.element_spec.shape.as_list() == [64, 28, 28, 1]
    assert batches.element_spec.dtype == tf.float32
    assert sum(1 for _ in batches) == 9
    with pytest.raises(ValueError, match="do not match"):
        data.make_dataset(np.zeros((4, 32, 32, 1), np.float32), spec, 2)
