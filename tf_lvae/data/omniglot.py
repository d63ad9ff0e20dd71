"""OMNIGLOT 28x28 in the IWAE layout (Burda et al., 2016): one MATLAB file `chardata.mat`.

Keys: `data` / `testdata` float64 [784, N] (each column one image stored column-major, strokes = 1),
`targetchar` / `testtargetchar` [1, N] 1-based character ids (1..1623). There is no TFDS data set
in this layout, so a local folder is always needed.
"""
import numpy as np

from tf_lvae.data.registry import DataFormatError, find_file

FILE = "chardata.mat"


def _images(m, key, path):
    data = m.get(key)
    if data is None or data.ndim != 2 or data.shape[0] != 784:
        raise DataFormatError(f"{path}: expected array {key!r} of shape [784, N]")
    # Columns are images; each image is stored column-major, hence the final transpose.
    images = data.T.reshape(-1, 28, 28).transpose(0, 2, 1)
    return np.clip(images, 0.0, 1.0).astype(np.float32)[..., None]


def _labels(m, key, n, path):
    labels = np.asarray(m.get(key, np.zeros((0,)))).reshape(-1)
    if labels.shape[0] != n:
        raise DataFormatError(f"{path}: expected {n} labels in {key!r}, got {labels.shape[0]}")
    return (labels - 1).astype(np.int32)  # 1-based MATLAB ids -> 0-based


def load(folder, name="omniglot"):
    """Reads `folder/chardata.mat`.

    Returns:
      {'train': (images, labels), 'test': (images, labels)}: images float32 [N, 28, 28, 1]
      in [0, 1], labels int32 [N] character ids in 0..1622.
    """
    import scipy.io  # imported lazily: only Omniglot needs scipy

    path = find_file(folder, [FILE], name,
                     f"Supply Omniglot offline with --data_dir=DIR, DIR holding {FILE} (the "
                     "IWAE-layout file with keys data, testdata, targetchar, testtargetchar).")
    try:
        m = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types (ValueError, MatReadError, OSError)
        raise DataFormatError(f"{path}: cannot read as a MATLAB file ({e})") from e
    out = {}
    for split, (x_key, y_key) in {"train": ("data", "targetchar"),
                                  "test": ("testdata", "testtargetchar")}.items():
        images = _images(m, x_key, path)
        out[split] = (images, _labels(m, y_key, images.shape[0], path))
    return out
