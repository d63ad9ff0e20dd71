"""`load_arrays`: any data set and split as in-memory numpy arrays, cached per process.

Validation examples are the LAST `num_validation` of the original training file, so the
split is fixed by the files alone. Dynamically binarized sets are returned as intensities for
training ('train', 'train+validation'); their evaluation splits ('validation', 'test') are
binarized once with fixed seeds so every run evaluates on the same bits. Dequantized sets
(norb, mnist_dequantized) are dequantized once per file with fixed seeds, every split: each
array is then a sample of the continuous data the Gaussian p(x|z) models, and the training
pipeline redraws the noise every epoch from the grey levels, which floor(256 x) recovers.
"""
import functools
from pathlib import Path

import numpy as np

from tf_lvae.data import binarized_mnist, dequantization, idx_files, norb, omniglot, tfds_source
from tf_lvae.data.registry import (DataNotFoundError, check_dir, default_data_dir, get_spec,
                                   manual_dir_from_env)

SPLITS = ("train", "validation", "test", "train+validation")
TEST_BINARIZATION_SEED = 123  # numpy seed of the one-off binarization of 'test'
VALIDATION_BINARIZATION_SEED = 124  # ... and of 'validation'
# numpy seeds of the one-off dequantization of the training file (all of 'train+validation')
# and of the test file
DEQUANTIZATION_SEEDS = {"train": 125, "test": 126}
# Data sets read from another data set's files (the idx files or TFDS builder of mnist).
_SOURCE_OF = {"mnist_dequantized": "mnist"}


def _freeze(arrays):
    for a in arrays:
        if a is not None:
            a.flags.writeable = False  # the cache hands out views; nobody may write into them
    return arrays


def _dequantized(parts):
    """The one fixed-seed dequantization of each file's grey levels (float32 [N, h, w, c])."""
    out = {}
    for part, (images, labels) in parts.items():
        uniform = np.random.default_rng(DEQUANTIZATION_SEEDS[part]).random(images.shape,
                                                                           dtype=np.float32)
        out[part] = (dequantization.dequantize(images, uniform), labels)
    return out


@functools.lru_cache(maxsize=8)
def _load_source(name, data_dir, manual_dir):
    """-> {'train': (images, labels), 'test': (images, labels)}, read-only, original order."""
    parts = _read_files(_SOURCE_OF.get(name, name), name, data_dir, manual_dir)
    if get_spec(name).binarization == "dequantize":
        parts = _dequantized(parts)
    return {split: _freeze(pair) for split, pair in parts.items()}


def _read_files(source, name, data_dir, manual_dir):
    """Reads the files of data set `source` (`name` in messages): float32 in [0, 1]."""
    if source == "binarized_mnist":
        return binarized_mnist.load(Path(data_dir), name)
    if source == "omniglot":
        if data_dir is None:
            raise DataNotFoundError(
                f"dataset 'omniglot' needs a local folder: pass --data_dir=DIR with DIR holding "
                f"{omniglot.FILE} (IWAE layout; TFDS has no Omniglot in this layout).")
        return omniglot.load(Path(data_dir), name)
    if source == "norb":
        return norb.load(data_dir, manual_dir, name)
    if data_dir is not None:  # mnist, fashion_mnist from idx files
        return idx_files.load(Path(data_dir), name)
    files = ", ".join(idx_files.FILES.values())
    how_to = (f"Offline, pass --data_dir=DIR with DIR holding the idx files {files}, or set "
              f"the manual_dir to such a folder so TFDS builds {source} from them. Note: TFDS "
              "stores examples in its own order, so its validation split differs from the "
              "one carved from the idx files.")
    return tfds_source.load_tfds(source, name, None, manual_dir, tfds_source.mnist_like,
                                 tuple(idx_files.FILES.values()), how_to)


def _check_num_validation(spec, num_validation, num_train):
    n = spec.num_validation if num_validation is None else num_validation
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < num_train:
        raise ValueError(f"num_validation must be an int in [0, {num_train - 1}] for dataset "
                         f"{spec.name!r} ({num_train} training examples), got {num_validation!r}")
    return int(n)


def _select(parts, split, n):
    """Views of one split, the last `n` training examples being the validation split."""
    if split == "test":
        return parts["test"]
    images, labels = parts["train"]
    index = {"train": slice(0, images.shape[0] - n),
             "validation": slice(images.shape[0] - n, None),
             "train+validation": slice(None)}[split]
    return images[index], None if labels is None else labels[index]


@functools.lru_cache(maxsize=16)
def _binarized(name, data_dir, manual_dir, split, n):
    """The one fixed-seed Bernoulli draw of an evaluation split: float32 0/1, read-only."""
    images, _ = _select(_load_source(name, data_dir, manual_dir), split, n)
    seed = TEST_BINARIZATION_SEED if split == "test" else VALIDATION_BINARIZATION_SEED
    uniform = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return _freeze(((uniform < images).astype(np.float32),))[0]


def load_arrays(name, split, data_dir=None, num_validation=None, *, manual_dir=None):
    """Loads one split of a data set into memory.

    Args:
      name: one of `DATASETS`.
      split: 'train', 'validation', 'test' or 'train+validation'.
      data_dir: folder with the raw files (idx files for mnist / mnist_dequantized /
        fashion_mnist, chardata.mat for omniglot, binarized_mnist.npz or .amat files for
        binarized_mnist) or, for norb, a TFDS data_dir. None: `default_data_dir(name)` (TFDS
        for mnist, mnist_dequantized, fashion_mnist, norb).
      num_validation: examples held out from the end of the training file (None: the spec's
        default; 0: no validation split).
      manual_dir: raw files TFDS may build from when not prepared (None: $TF_LVAE_TFDS_MANUAL_DIR).

    Returns:
      (images, labels): read-only float32 [N, h, w, c] in [0, 1] and int32 [N] (None when the
      data set has no labels). Dynamic sets give intensities for training splits and 0/1 pixels
      for 'validation' / 'test' (seeds VALIDATION_/TEST_BINARIZATION_SEED). Dequantized sets
      give (k + u) / 256 in [0, 1) for every split, u drawn once per file
      (DEQUANTIZATION_SEEDS), so 'validation' is the end of 'train+validation'.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if data_dir is None:
        data_dir = default_data_dir(name)
    data_dir = None if data_dir is None else str(check_dir(data_dir, name))
    manual_dir = manual_dir or manual_dir_from_env()
    manual_dir = None if manual_dir is None else str(manual_dir)
    parts = _load_source(name, data_dir, manual_dir)

    n = _check_num_validation(spec, num_validation, parts["train"][0].shape[0])
    if split == "validation" and n == 0:
        raise ValueError(f"dataset {name!r} has no validation split with num_validation=0")
    images, labels = _select(parts, split, n)
    if spec.binarization == "dynamic" and split in ("validation", "test"):
        images = _binarized(name, data_dir, manual_dir, split, n if split == "validation" else 0)
    return images, labels


def clear_cache():
    """Drops every cached array (e.g. after the files on disk changed)."""
    _load_source.cache_clear()
    _binarized.cache_clear()
