"""small NORB (LeCun et al., 2004) as the LVAE authors prepared it: left camera, 32x32 bicubic.

Read through TFDS `smallnorb` (96x96 stereo pairs, 24,300 train / 24,300 test); its feature
'image' is the first image of each pair, the one the authors kept (parmesan's `data[:, 0, :]`).

Resizing 96 -> 32: the authors' 32x32 files are `smallnorb-...-32x32-...-matlab-bicubic.mat`,
i.e. MATLAB's `imresize(image, [32 32], 'bicubic')`. `resize_weights` rebuilds that resize
exactly: Keys' cubic kernel (a = -0.5), widened by the factor 3 to antialias the downsampling
(MATLAB's default), pixel centres aligned (output pixel i sits at input 3i + 1), and at the
image edge the image mirrored with its edge pixel repeated (MATLAB's index reflection). Inside
the image (output rows and columns 2..29) this equals `tf.image.resize(method='bicubic',
antialias=True)` and PIL's `Image.resize(BICUBIC)`; those two renormalize the truncated kernel
at the edge instead of mirroring, which moves the outer two rows and columns by up to ~12 grey
levels on noise (little on NORB's smooth backgrounds). `tf.image.resize(antialias=False)` would
sample 4 of every 9 input pixels per axis and alias. The result is rounded to the nearest grey
level and clipped to 0..255 (the cubic kernel's negative lobes overshoot), as MATLAB's uint8
output is; which MATLAB class the authors resized in is not recorded, so an intermediate uint8
rounding between the two 1-D passes (MATLAB on uint8 input) may differ from theirs by at most
one grey level.

The loader returns the grey levels as k / 255; `load_arrays` dequantizes them (`norb` has
`binarization='dequantize'`, see `tf_lvae.data.dequantization`). Unlike parmesan, the training
set is not stacked twice (its `np.concatenate([data[:, 0, :].T, data[:, 0, :].T])` repeats the
left images rather than adding the right ones).
"""
import functools

import numpy as np

from tf_lvae.data import tfds_source
from tf_lvae.data.registry import MANUAL_DIR_ENV

TFDS_NAME = "smallnorb"
SIZE_IN, SIZE_OUT = 96, 32
# The raw files TFDS downloads; a TFDS manual_dir must hold them under these names.
MANUAL_FILES = tuple(
    f"smallnorb-5x{ids}x9x18x6x2x96x96-{part}-{kind}.mat.gz"
    for ids, part in (("46789", "training"), ("01235", "testing"))
    for kind in ("dat", "cat", "info"))


def _keys_cubic(x):
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's, PIL's and TF's 'bicubic')."""
    a = np.abs(x)
    return np.where(a <= 1, (1.5 * a - 2.5) * a * a + 1,
                    np.where(a < 2, ((-0.5 * a + 2.5) * a - 4) * a + 2, 0.0))


@functools.lru_cache(maxsize=4)
def resize_weights(size_in=SIZE_IN, size_out=SIZE_OUT):
    """The float64 [size_out, size_in] matrix of MATLAB's 1-D bicubic downsampling.

    Row i holds the weights of output pixel i; each row sums to 1. A 2-D image resizes as
    `W @ image @ W.T` (MATLAB resizes one axis, then the other).
    """
    if not 0 < size_out <= size_in:
        raise ValueError(f"resize_weights downsamples: need 0 < size_out <= size_in, got "
                         f"{size_out}, {size_in}")
    scale = size_out / size_in
    width = 4 / scale                                          # the antialiased kernel's support
    centre = (np.arange(size_out) + 0.5) / scale - 0.5         # in input pixels, 0-based
    taps = np.floor(centre - width / 2)[:, None] + np.arange(int(np.ceil(width)) + 2)
    weights = scale * _keys_cubic(scale * (centre[:, None] - taps))
    weights /= weights.sum(axis=1, keepdims=True)
    # Mirror taps outside the image, edge pixel repeated: -1 -> 0, -2 -> 1, size_in -> size_in - 1.
    period = np.concatenate([np.arange(size_in), np.arange(size_in)[::-1]])
    taps = period[taps.astype(np.int64) % (2 * size_in)]
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.repeat(np.arange(size_out), taps.shape[1]), taps.ravel()),
              weights.ravel())
    matrix.flags.writeable = False
    return matrix


def resize(images):
    """uint8 (or any real) [B, 96, 96, 1] -> float32 [B, 32, 32, 1] grey levels k / 255.

    MATLAB-style bicubic (see the module docstring), rounded to the nearest level in 0..255.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (SIZE_IN, SIZE_IN, 1):
        raise ValueError(f"norb.resize expects images [B, {SIZE_IN}, {SIZE_IN}, 1], got "
                         f"{images.shape}")
    w = resize_weights()
    small = w @ images[..., 0].astype(np.float64) @ w.T  # 2 matmuls (docs/PERFORMANCE.md)
    levels = np.clip(np.floor(small + 0.5), 0, 255)  # MATLAB rounds halves up (here: positive)
    return (levels / 255.0).astype(np.float32)[..., None]


def _convert(batch):
    return resize(batch["image"]), batch["label_category"]  # 'image' is the left camera


def load(data_dir, manual_dir, name="norb"):
    """Reads TFDS smallnorb from TFDS `data_dir` (None: TFDS's default).

    Returns:
      {'train': (images, labels), 'test': (images, labels)}: images float32 [N, 32, 32, 1],
      grey levels k / 255 in [0, 1]; labels int32 [N] object category in 0..4.
    """
    how_to = (
        "small NORB is not shipped with tf_lvae. Offline, either put the six raw files "
        f"({', '.join(MANUAL_FILES)}, from https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/) in "
        f"a folder and set ${MANUAL_DIR_ENV}=FOLDER so TFDS builds smallnorb from them, or run "
        "`tfds build smallnorb` on a machine with internet and copy its data dir here, passing "
        "--data_dir=THAT_DIR (the folder that contains smallnorb/).")
    return tfds_source.load_tfds(TFDS_NAME, name, data_dir, manual_dir, _convert,
                                 MANUAL_FILES, how_to)
