"""MNIST / Fashion-MNIST from the four LeCun idx files (gzipped or not) in a local folder.

idx layout (http://yann.lecun.com/exdb/mnist/): a big-endian header `0x00 0x00 <dtype> <ndim>`,
then `ndim` uint32 sizes, then the row-major data. Fashion-MNIST uses the same file names.
"""
import gzip
import zlib

import numpy as np

from tf_lvae.data.registry import DataFormatError, find_file

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# idx dtype codes -> big-endian numpy dtypes.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Parses one idx file (gzip detected by its magic bytes) into a native-endian array.

    Raises DataFormatError (naming the file) on a bad header, a truncated body or trailing bytes.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] == 0:
        raise DataFormatError(f"{path}: not an idx file (bad magic number {raw[:4].hex()!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated idx header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: idx header says shape {dims} ({expected} data bytes) but the file holds "
            f"{len(raw) - header} data bytes (truncated or corrupt)")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _read_pair(folder, name, images_key, labels_key, how_to):
    """Reads and cross-checks one (images, labels) pair -> uint8 [N, 28, 28], int32 [N]."""
    paths = [find_file(folder, [FILES[k], FILES[k][:-3]], name, how_to)
             for k in (images_key, labels_key)]
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataFormatError(f"{paths[0]}: expected uint8 images [N, 28, 28], got "
                              f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataFormatError(f"{paths[1]}: expected {images.shape[0]} labels, got shape "
                              f"{labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{paths[1]}: labels outside 0..9")
    return images, labels.astype(np.int32)


def load(folder, name):
    """Reads the idx files in `folder` (a Path).

    Returns:
      {'train': (images, labels), 'test': (images, labels)} with images float32
      [N, 28, 28, 1] in [0, 1] (intensities / 255) and labels int32 [N], in file order.
    """
    how_to = (f"Supply {name} offline with --data_dir=DIR, DIR holding the four idx files "
              f"{', '.join(FILES.values())} (gzipped or not).")
    out = {}
    for split in ("train", "test"):
        images, labels = _read_pair(folder, name, f"{split}_images", f"{split}_labels", how_to)
        out[split] = (images[..., None].astype(np.float32) / 255.0, labels)
    return out
