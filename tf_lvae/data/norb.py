"""small NORB (LeCun et al., 2004) as in the LVAE paper: left camera, 32x32, grey levels in [0, 1].

Read through TFDS `smallnorb` (96x96 stereo pairs, 24,300 train / 24,300 test). 96 = 3 * 32, so
area resizing is an exact 3x3 mean pool, done here in numpy.
"""
import numpy as np

from tf_lvae.data import tfds_source
from tf_lvae.data.registry import MANUAL_DIR_ENV

TFDS_NAME = "smallnorb"
# The raw files TFDS downloads; a TFDS manual_dir must hold them under these names.
MANUAL_FILES = tuple(
    f"smallnorb-5x{ids}x9x18x6x2x96x96-{part}-{kind}.mat.gz"
    for ids, part in (("46789", "training"), ("01235", "testing"))
    for kind in ("dat", "cat", "info"))


def downsample(images):
    """uint8 [B, 96, 96, 1] -> float32 [B, 32, 32, 1] in [0, 1] by 3x3 mean pooling."""
    b, h, w, c = images.shape
    blocks = images.reshape(b, h // 3, 3, w // 3, 3, c).astype(np.float32)
    return blocks.mean(axis=(2, 4)) / 255.0


def _convert(batch):
    return downsample(batch["image"]), batch["label_category"]  # 'image' is the left camera


def load(data_dir, manual_dir, name="norb"):
    """Reads TFDS smallnorb from TFDS `data_dir` (None: TFDS's default).

    Returns:
      {'train': (images, labels), 'test': (images, labels)}: images float32 [N, 32, 32, 1] in
      [0, 1], labels int32 [N] object category in 0..4.
    """
    how_to = (
        "small NORB is not shipped with tf_lvae. Offline, either put the six raw files "
        f"({', '.join(MANUAL_FILES)}, from https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/) in "
        f"a folder and set ${MANUAL_DIR_ENV}=FOLDER so TFDS builds smallnorb from them, or run "
        "`tfds build smallnorb` on a machine with internet and copy its data dir here, passing "
        "--data_dir=THAT_DIR (the folder that contains smallnorb/).")
    return tfds_source.load_tfds(TFDS_NAME, name, data_dir, manual_dir, _convert,
                                 MANUAL_FILES, how_to)
