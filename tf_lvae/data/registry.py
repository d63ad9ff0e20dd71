"""What each data set is: shapes, likelihood, binarization or dequantization, default splits.

Everything else in `tf_lvae.data` reads these specs; models read them too (the likelihood
picks the decoder head, `image_shape` the input layer).
"""
import dataclasses
import os
from pathlib import Path

DATASETS = ("mnist", "binarized_mnist", "omniglot", "norb", "fashion_mnist",
            "mnist_dequantized")
BINARIZATIONS = ("dynamic", "static", "dequantize", "none")

# Environment variable naming a folder of raw files that TFDS may build a data set from
# offline (`tfds.download.DownloadConfig(manual_dir=...)`).
MANUAL_DIR_ENV = "TF_LVAE_TFDS_MANUAL_DIR"

_ASSETS_DIR = Path(__file__).resolve().parent / "assets"


class DataNotFoundError(FileNotFoundError):
    """Data files are missing; the message says what was looked for where and how to supply it."""


class DataFormatError(ValueError):
    """A data file exists but is corrupt, truncated or has the wrong layout."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Static description of a data set.

    Attributes:
      name: one of `DATASETS`.
      image_shape: `(h, w, c)` of one example.
      likelihood: 'bernoulli' (binary pixels) or 'gaussian' (continuous pixels in [0, 1]).
      binarization: how the files' grey levels become the model's data (one of BINARIZATIONS):
        'dynamic' (fresh Bernoulli pixels each training epoch, evaluation splits binarized
        once), 'static' (the files already hold 0/1 pixels), 'dequantize' (8-bit grey level k
        -> (k + u) / 256, u ~ U[0, 1): fresh u each training epoch, every split of
        `load_arrays` drawn once; `tf_lvae.data.dequantization`) or 'none' (used as read).
      num_validation: default number of held-out examples carved from the END of the original
        training file (binarized_mnist: its native validation split, appended after train).
      has_labels: whether `load_arrays` returns class labels.
    """

    name: str
    image_shape: tuple
    likelihood: str
    binarization: str
    num_validation: int
    has_labels: bool


_SPECS = {
    "mnist": DataSpec("mnist", (28, 28, 1), "bernoulli", "dynamic", 10000, True),
    "binarized_mnist": DataSpec("binarized_mnist", (28, 28, 1), "bernoulli", "static", 10000,
                                False),
    # IWAE-style Omniglot split: the last 1345 training images are held out for validation.
    "omniglot": DataSpec("omniglot", (28, 28, 1), "bernoulli", "dynamic", 1345, True),
    "norb": DataSpec("norb", (32, 32, 1), "gaussian", "dequantize", 2000, True),
    "fashion_mnist": DataSpec("fashion_mnist", (28, 28, 1), "bernoulli", "dynamic", 10000, True),
    # The MNIST files' grey levels, dequantized: real continuous data for the Gaussian p(x|z).
    "mnist_dequantized": DataSpec("mnist_dequantized", (28, 28, 1), "gaussian", "dequantize",
                                  10000, True),
}


def _check_name(name):
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def get_spec(name):
    """Returns the `DataSpec` of data set `name`; unknown names raise ValueError."""
    _check_name(name)
    return _SPECS[name]


def default_data_dir(name):
    """Where `load_arrays` looks when `data_dir` is None.

    binarized_mnist: the copy shipped inside the package (works offline). Every other data
    set: None, meaning TFDS's own data directory (mnist, mnist_dequantized: TFDS `mnist`,
    fashion_mnist, norb: `smallnorb`) or nothing (omniglot needs an explicit `data_dir`).
    """
    _check_name(name)
    return str(_ASSETS_DIR) if name == "binarized_mnist" else None


def manual_dir_from_env():
    """The TFDS manual_dir named by $TF_LVAE_TFDS_MANUAL_DIR, or None."""
    return os.environ.get(MANUAL_DIR_ENV) or None


def check_dir(data_dir, name):
    """Returns `data_dir` as a resolved Path, or raises DataNotFoundError if it is not a folder."""
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataNotFoundError(
            f"data_dir {str(path)!r} for dataset {name!r} {what}; pass --data_dir=DIR with DIR "
            f"a folder holding the {name} files")
    return path.resolve()


def find_file(folder, candidates, name, how_to):
    """Returns the first of `candidates` (file names) present in `folder`, else raises.

    The error lists every path looked for and `how_to` (how to supply the files offline).
    """
    for candidate in candidates:
        if (folder / candidate).is_file():
            return folder / candidate
    looked = ", ".join(str(folder / c) for c in candidates)
    raise DataNotFoundError(f"dataset {name!r}: none of [{looked}] exists. {how_to}")
