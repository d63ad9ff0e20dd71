"""Reading a TFDS data set fully into memory, offline.

No download is ever attempted without a manual_dir: machines running tf_lvae often have no
internet, and a hanging download is worse than a clear error. With a manual_dir (the raw files
TFDS would download, under their original names), TFDS builds the data set from it.
"""
import os
from pathlib import Path

import numpy as np

from tf_lvae.data.registry import MANUAL_DIR_ENV, DataNotFoundError

_BATCH = 2048  # examples converted per step; bounds peak memory for 96x96 NORB


def _prepare(builder, name, manual_dir, manual_files):
    """Builds the TFDS data set from `manual_dir`; raises DataNotFoundError if files are missing."""
    import tensorflow_datasets as tfds

    folder = Path(manual_dir).expanduser()
    missing = [f for f in manual_files if not (folder / f).is_file()]
    if missing:  # checked here so TFDS never falls back to a (failing, slow) download
        raise DataNotFoundError(
            f"dataset {name!r}: TFDS {builder.name!r} is not prepared in {builder.data_dir} and "
            f"the manual_dir {str(folder)!r} lacks {', '.join(missing)}.")
    config = tfds.download.DownloadConfig(manual_dir=str(folder))
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # TFDS raises many types; all mean "could not build it here"
        raise DataNotFoundError(
            f"dataset {name!r}: TFDS could not build {builder.name!r} from manual_dir "
            f"{str(folder)!r} into {builder.data_dir}: {e}") from e


def load_tfds(tfds_name, name, data_dir, manual_dir, convert, manual_files, how_to):
    """Loads splits 'train' and 'test' of TFDS `tfds_name` in TFDS's (deterministic) order.

    Args:
      tfds_name: TFDS builder name, e.g. 'smallnorb'.
      name: tf_lvae data set name (for messages).
      data_dir: TFDS data_dir (None: TFDS's default, $TFDS_DATA_DIR or ~/tensorflow_datasets).
      manual_dir: folder of raw files to build from when not prepared (None: none).
      convert: maps a numpy batch dict -> (images float32 [B, h, w, c], labels int32 [B]).
      manual_files: raw file names TFDS expects in manual_dir.
      how_to: sentence appended to the error explaining how to supply the data offline.

    Returns:
      {'train': (images, labels), 'test': (images, labels)}.
    """
    import tensorflow_datasets as tfds

    # TFDS reads $TFDS_DATA_DIR once at import; reading it here honours later changes too.
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    builder = tfds.builder(tfds_name, data_dir=None if data_dir is None else str(data_dir))
    # Under tfds.testing.mock_data is_prepared() is False yet as_dataset works, so a missing
    # manual_dir is not an error by itself: as_dataset below decides.
    if not builder.is_prepared() and manual_dir:
        _prepare(builder, name, manual_dir, manual_files)
    out = {}
    for split in ("train", "test"):
        try:
            ds = builder.as_dataset(split=split, batch_size=_BATCH, shuffle_files=False)
        except AssertionError as e:  # TFDS's "could not find data in <dir>"
            raise DataNotFoundError(
                f"dataset {name!r}: TFDS {tfds_name!r} is not prepared in {builder.data_dir} "
                f"and no manual_dir was given (set ${MANUAL_DIR_ENV}). {how_to}") from e
        parts = [convert(batch) for batch in tfds.as_numpy(ds)]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts]).astype(np.int32)
        out[split] = (images, labels)
    return out


def mnist_like(batch):
    """TFDS mnist / fashion_mnist batch -> (float32 [B, 28, 28, 1] in [0, 1], int32 [B])."""
    return batch["image"].astype(np.float32) / 255.0, batch["label"]
