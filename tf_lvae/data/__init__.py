"""Data sets of the LVAE paper as in-memory arrays and tf.data pipelines, offline-first.

    from tf_lvae import data
    spec = data.get_spec("mnist")
    images, labels = data.load_arrays("mnist", "train", data_dir="path/to/idx/files")
    ds = data.make_dataset(images, spec, batch_size=256, shuffle=True, seed=0)

Data sets (`DATASETS`): mnist, fashion_mnist (LeCun idx files or TFDS), binarized_mnist (static,
shipped with the package), omniglot (IWAE `chardata.mat`), norb (TFDS smallnorb, bicubic 32x32,
dequantized), mnist_dequantized (the mnist files' grey levels, dequantized, for a Gaussian p(x|z)).
"""
from tf_lvae.data.loading import (DEQUANTIZATION_SEEDS, SPLITS, TEST_BINARIZATION_SEED,
                                  VALIDATION_BINARIZATION_SEED, clear_cache, load_arrays)
from tf_lvae.data.registry import (BINARIZATIONS, DATASETS, MANUAL_DIR_ENV, DataFormatError,
                                   DataNotFoundError, DataSpec, default_data_dir, get_spec)

__all__ = [
    "BINARIZATIONS", "DATASETS", "DEQUANTIZATION_SEEDS", "DataFormatError", "DataNotFoundError",
    "DataSpec", "MANUAL_DIR_ENV", "SPLITS", "TEST_BINARIZATION_SEED",
    "VALIDATION_BINARIZATION_SEED", "clear_cache", "default_data_dir", "get_spec", "load_arrays",
    "make_dataset",
]


def __getattr__(name):
    # make_dataset (tf.data) loads on first use: the arrays, specs and errors need no
    # TensorFlow, so a CLI can check its config and data before TensorFlow starts.
    if name == "make_dataset":
        from tf_lvae.data.pipeline import make_dataset
        return make_dataset
    raise AttributeError(f"module 'tf_lvae.data' has no attribute {name!r}")
