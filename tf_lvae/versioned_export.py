"""Writing serving SavedModels as TF Serving's numbered versions, never half of one.

    export_dir/
      1/  saved_model.pb, variables/, assets.extra/tf_lvae_export.json
      2/  ...                        TF Serving serves the largest number by default

A version is written to a hidden staging folder inside export_dir (TF Serving only loads
folders named by an integer), loaded back with the TF1 session loader TF Serving uses, run
once per signature, and only then renamed to its number: the rename is atomic, so a crash
at any point leaves either no version or a complete one. A `.tmp-*` folder left behind by a
killed export is never loaded and can be deleted.
"""
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tf_lvae import serving

METADATA_FILE = "tf_lvae_export.json"  # in <version>/assets.extra/, which TF Serving ignores
STAGING_PREFIX = ".tmp-"


class ExportError(RuntimeError):
    """An export that could not be completed (nothing was published)."""


def next_version(export_dir):
    """1 + the largest integer version folder in export_dir (1 when there is none)."""
    versions = [int(path.name) for path in pathlib.Path(export_dir).iterdir()
                if path.is_dir() and path.name.isdigit()]
    return max(versions, default=0) + 1


def smoke_inputs(spec):
    """{signature: {input: numpy value}}: one small valid request per signature."""
    image = np.zeros([1, *spec.image_shape], np.float32)
    return dict(
        encode=dict(images=image),
        sample=dict(num_samples=np.int32(1), seed=np.int32(0), temperature=np.float32(1.0)),
        decode={f"z{i}_noise": np.zeros([1, size], np.float32)
                for i, size in enumerate(spec.latent_sizes, start=1)},
        reconstruct=dict(images=image),
        log_likelihood=dict(images=image, num_samples=np.int32(2), seed=np.int32(0)),
    )


def check_servable(saved_model_dir, spec):
    """Load a SavedModel with TF Serving's TF1 session loader and run every signature once.

    Raises ExportError naming a missing signature or the one that failed.
    """
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, [tf.saved_model.SERVING], str(saved_model_dir))
        missing = set(serving.SIGNATURES) - set(meta_graph.signature_def)
        if missing:
            raise ExportError(f"the SavedModel in {saved_model_dir} lacks signatures "
                              f"{sorted(missing)}")
        for name, feeds in smoke_inputs(spec).items():
            signature = meta_graph.signature_def[name]
            fetches = {key: graph.get_tensor_by_name(info.name)
                       for key, info in signature.outputs.items()}
            feed_dict = {graph.get_tensor_by_name(signature.inputs[key].name): value
                         for key, value in feeds.items()}
            try:
                outputs = session.run(fetches, feed_dict)
            except tf.errors.OpError as error:
                raise ExportError(f"signature {name!r} fails on a valid request: "
                                  f"{error.message}") from error
            if not all(np.all(np.isfinite(value)) for value in outputs.values()):
                raise ExportError(f"signature {name!r} returns non-finite values")


def _move_into_place(staging, final):
    os.rename(staging, final)  # atomic on one file system; refuses a non-empty target


def export_model(model, export_dir, version=None, limits=serving.ServingLimits(),
                 metadata=None):
    """Write `model`'s serving SavedModel to export_dir/<version>/; returns that path.

    version defaults to next_version(export_dir). `metadata` (a JSON-able dict) is stored
    with the signatures, limits and model spec in <version>/assets.extra/tf_lvae_export.json.
    """
    if version is not None and int(version) < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    export_dir = pathlib.Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(export_dir) if version is None else int(version)
    final = export_dir / str(version)
    if final.exists():
        raise ExportError(f"{final} already exists; a TF Serving version is never "
                          "overwritten: pick another --version (default: the next free one)")
    staging = pathlib.Path(tempfile.mkdtemp(dir=export_dir, prefix=f"{STAGING_PREFIX}{version}-"))
    try:
        saved_model_dir = staging / "saved_model"
        serving.build_archive(model, limits).write_out(str(saved_model_dir), verbose=False)
        info = dict(metadata or {}, signatures=list(serving.SIGNATURES), version=version,
                    limits=dataclasses.asdict(limits), model_spec=dataclasses.asdict(model.spec),
                    tensorflow_version=tf.__version__, keras_version=keras.__version__)
        (saved_model_dir / "assets.extra").mkdir()
        (saved_model_dir / "assets.extra" / METADATA_FILE).write_text(
            json.dumps(info, indent=2, sort_keys=True) + "\n")
        check_servable(saved_model_dir, model.spec)
        _move_into_place(saved_model_dir, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def export_model_dir(model_dir, export_dir, version=None, limits=serving.ServingLimits()):
    """Export the latest checkpoint of a trained model_dir; returns export_dir/<version>.

    Raises tf_lvae.model_dir.ModelDirError, before anything is written, when model_dir holds
    no trained checkpoint.
    """
    from tf_lvae import model_dir as model_dir_lib
    model, config, epochs = model_dir_lib.load_model(model_dir)
    metadata = dict(model_dir=os.path.abspath(model_dir), epochs_trained=epochs,
                    dataset=config.get("data", {}).get("dataset"))
    return export_model(model, export_dir, version, limits, metadata)
