"""Statically binarized MNIST (Larochelle & Murray, 2011): native 50k / 10k / 10k splits, no labels.

A folder may hold either `binarized_mnist.npz` (arrays `train`, `valid`, `test` of uint8
[N, 98] = 784 bits packed with `np.packbits(axis=1)`; the package ships one) or the three
original `.amat` text files (one image a line, 784 space-separated 0/1 values).
"""
import numpy as np

from tf_lvae.data.registry import DataFormatError, DataNotFoundError

NPZ = "binarized_mnist.npz"
AMAT = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}
_PARTS = ("train", "valid", "test")


def read_amat(path):
    """Reads one .amat file -> float32 [N, 28, 28, 1] of 0/1 pixels.

    Parsed on the raw bytes (np.loadtxt is slow on the 78 MB train file; docs/PERFORMANCE.md):
    every non-blank byte must be '0' or '1', and every non-empty line must hold exactly 784 of
    them.
    """
    with open(path, "rb") as f:
        text = np.frombuffer(f.read() + b"\n", np.uint8)
    newline = text == ord("\n")
    digit = ~(newline | (text == ord(" ")) | (text == ord("\t")) | (text == ord("\r")))
    if not np.isin(text[digit], (ord("0"), ord("1"))).all():
        raise DataFormatError(f"{path}: expected only single-digit 0/1 values separated by spaces")
    per_line = np.diff(np.cumsum(digit)[newline], prepend=0)
    per_line = per_line[per_line > 0]  # skip blank lines
    if (per_line != 784).any():
        bad = int(np.flatnonzero(per_line != 784)[0])
        raise DataFormatError(f"{path}: image {bad} has {per_line[bad]} pixels, expected 784")
    return (text[digit] - ord("0")).astype(np.float32).reshape(-1, 28, 28, 1)


def _read_npz(path):
    with np.load(path) as f:
        missing = [k for k in _PARTS if k not in f]
        if missing:
            raise DataFormatError(f"{path}: missing arrays {missing}")
        out = {}
        for key in _PARTS:
            packed = f[key]
            if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != 98:
                raise DataFormatError(f"{path}: array {key!r} should be packed bits uint8 "
                                      f"[N, 98], got {packed.dtype} {packed.shape}")
            bits = np.unpackbits(packed, axis=1)[:, :784]
            out[key] = bits.astype(np.float32).reshape(-1, 28, 28, 1)
    return out


def load(folder, name="binarized_mnist"):
    """Reads `folder` (a Path); the npz wins when both layouts are present.

    Returns:
      {'train': (images, None), 'test': (images, None)}, images float32 [N, 28, 28, 1] of 0/1.
      'train' is the native train split FOLLOWED by the native valid split (50k + 10k), so
      carving the default 10000 validation examples from its end gives back the native split.
    """
    if (folder / NPZ).is_file():
        parts = _read_npz(folder / NPZ)
    elif all((folder / f).is_file() for f in AMAT.values()):
        parts = {k: read_amat(folder / f) for k, f in AMAT.items()}
    else:
        looked = ", ".join(str(folder / f) for f in (NPZ, *AMAT.values()))
        raise DataNotFoundError(
            f"dataset {name!r}: found neither {NPZ} nor all three .amat files (looked for "
            f"{looked}). Supply them offline with --data_dir=DIR, DIR holding {NPZ} or "
            f"{', '.join(AMAT.values())}; or omit --data_dir to use the copy shipped with tf_lvae.")
    train = np.concatenate([parts["train"], parts["valid"]])
    return {"train": (train, None), "test": (parts["test"], None)}
