"""Writing serving SavedModels as TF Serving's numbered versions, never half of one.

    export_dir/
      1/  saved_model.pb, variables/,
          assets.extra/tf_lvae_export.json          signatures, limits, model spec (ours)
          assets.extra/tf_serving_warmup_requests   one small request per signature
      2/  ...                        TF Serving serves the largest number by default

A version is written to a hidden staging folder inside export_dir (TF Serving only loads
folders named by an integer), loaded back with the TF1 session loader TF Serving uses, run
once per signature, and only then renamed to its number: the rename is atomic, so a crash
at any point leaves either no version or a complete one. A `.tmp-*` folder left behind by a
killed export is never loaded and can be deleted.

Warm-up: TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`tensorflow.serving.PredictionLog`s) when it loads a version, before the version takes
traffic, so the first real request does not pay for the graph's first run. The records are
the requests `check_servable` runs. They are encoded here with protobuf's wire format around
TensorFlow's own TensorProto, so exporting does not need tensorflow-serving-api (an optional
extra that installs the `tensorflow` wheel); the tests parse them with its protos.
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

from tf_lvae import experiment_config
from tf_lvae.serving import signatures as serving
from tf_lvae.storage import checkpoints

METADATA_FILE = "tf_lvae_export.json"  # in <version>/assets.extra/, which TF Serving ignores
WARMUP_FILE = "tf_serving_warmup_requests"  # in <version>/assets.extra/: TF Serving's name
STAGING_PREFIX = ".tmp-"


class ExportError(RuntimeError):
    """An export that could not be completed (nothing was published)."""


def next_version(export_dir):
    """1 + the largest integer version folder in export_dir (1 when there is none)."""
    versions = [int(path.name) for path in pathlib.Path(export_dir).iterdir()
                if path.is_dir() and path.name.isdigit()]
    return max(versions, default=0) + 1


def smoke_inputs(spec, signature_version=serving.SIGNATURE_VERSION):
    """{signature: {input: numpy value}}: one small valid request per signature (batch 1),
    in the order of serving.SIGNATURES_BY_VERSION."""
    image = np.zeros([1, *spec.image_shape], np.float32)
    rows = dict(seed=np.zeros([1], np.int32), temperature=np.ones([1], np.float32))
    common = dict(
        encode=dict(images=image),
        decode={f"z{i}_noise": np.zeros([1, size], np.float32)
                for i, size in enumerate(spec.latent_sizes, start=1)},
        reconstruct=dict(images=image))
    if signature_version == 1:
        versioned = dict(
            sample=dict(num_samples=np.int32(1), seed=np.int32(0), temperature=np.float32(1.0)),
            log_likelihood=dict(images=image, num_samples=np.int32(2), seed=np.int32(0)))
    else:
        layer = np.full([1], spec.num_layers, np.int32)
        versioned = dict(
            sample=rows,
            sample_per_layer=dict(seed=rows["seed"],
                                  temperatures=np.ones([1, spec.num_layers], np.float32)),
            keep_top=dict(images=image, layer=layer, **rows),
            interpolate=dict(images_a=image, images_b=image, layer=layer,
                             weight=np.full([1], 0.5, np.float32)),
            log_likelihood=dict(images=image, seed=rows["seed"]))
    requests = dict(common, **versioned)
    return {name: requests[name] for name in serving.SIGNATURES_BY_VERSION[signature_version]}


def _varint(value):
    """A non-negative int in protobuf's base-128 varint encoding."""
    encoded = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2: strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(signature_name, inputs):
    """A serialized tensorflow.serving.PredictionLog holding one PredictRequest.

    PredictionLog.predict_log (field 6) -> PredictLog.request (1) -> PredictRequest with
    model_spec (1: ModelSpec.signature_name, field 3) and inputs (2: map<string, TensorProto>,
    entries {key = 1, value = 2}); field numbers of tensorflow_serving/apis/*.proto. The
    model name is left empty: TF Serving's warm-up runs the request on the model loading it.
    """
    model_spec = _field(3, signature_name.encode())
    entries = b"".join(
        _field(2, _field(1, name.encode())
               + _field(2, tf.make_tensor_proto(value).SerializeToString()))
        for name, value in sorted(inputs.items()))
    return _field(6, _field(1, _field(1, model_spec) + entries))


def write_warmup_requests(path, requests):
    """Write {signature: {input: value}} as TF Serving's warm-up file (TFRecord of
    PredictionLog records, one per signature)."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for name, inputs in requests.items():
            writer.write(prediction_log(name, inputs))


def check_servable(saved_model_dir, spec, signature_version=serving.SIGNATURE_VERSION):
    """Load a SavedModel with TF Serving's TF1 session loader and run every signature once
    (the warm-up requests, `smoke_inputs`).

    Raises ExportError naming a missing signature or the one that failed.
    """
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, [tf.saved_model.SERVING], str(saved_model_dir))
        missing = (set(serving.SIGNATURES_BY_VERSION[signature_version])
                   - set(meta_graph.signature_def))
        if missing:
            raise ExportError(f"the SavedModel in {saved_model_dir} lacks signatures "
                              f"{sorted(missing)}")
        for name, feeds in smoke_inputs(spec, signature_version).items():
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
                 metadata=None, signature_version=serving.SIGNATURE_VERSION):
    """Write `model`'s serving SavedModel to export_dir/<version>/; returns that path.

    version defaults to next_version(export_dir). `metadata` (a JSON-able dict) is stored
    with the signature version and names, limits and model spec in
    <version>/assets.extra/tf_lvae_export.json; the warm-up requests go beside it.
    """
    if signature_version not in serving.SIGNATURES_BY_VERSION:
        raise ValueError(f"signature_version must be one of "
                         f"{sorted(serving.SIGNATURES_BY_VERSION)}, got {signature_version!r}")
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
        serving.build_archive(model, limits, signature_version).write_out(
            str(saved_model_dir), verbose=False)
        info = dict(metadata or {}, signature_version=signature_version,
                    signatures=list(serving.SIGNATURES_BY_VERSION[signature_version]),
                    version=version, limits=dataclasses.asdict(limits),
                    model_spec=dataclasses.asdict(model.spec), warmup_requests=WARMUP_FILE,
                    tensorflow_version=tf.__version__, keras_version=keras.__version__)
        extra = saved_model_dir / "assets.extra"
        extra.mkdir()
        (extra / METADATA_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        write_warmup_requests(extra / WARMUP_FILE, smoke_inputs(model.spec, signature_version))
        check_servable(saved_model_dir, model.spec, signature_version)
        _move_into_place(saved_model_dir, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def export_model_dir(model_dir, export_dir, version=None, limits=serving.ServingLimits(),
                     signature_version=serving.SIGNATURE_VERSION):
    """Export the latest checkpoint of a trained model_dir; returns export_dir/<version>.

    Raises tf_lvae.storage.model_dir.ModelDirError, before anything is written, when model_dir holds
    no trained checkpoint.
    """
    from tf_lvae.evaluation import batch_norm_statistics
    model, config, epochs = checkpoints.load_model(model_dir)
    experiment = experiment_config.resolve(config)
    # The export serves with the population statistics of the final weights (config's choice).
    bn_statistics = batch_norm_statistics.for_evaluation(model, experiment)
    metadata = dict(model_dir=os.path.abspath(model_dir), epochs_trained=epochs,
                    dataset=experiment.data.dataset, bn_statistics=bn_statistics)
    return export_model(model, export_dir, version, limits, metadata, signature_version)


def export_pretrained(name, export_dir, version=None, limits=serving.ServingLimits(),
                      signature_version=serving.SIGNATURE_VERSION):
    """Export a model shipped with the package (`tf_lvae.pretrained`); returns the version."""
    from tf_lvae.storage import model_zoo
    card = model_zoo.model_card(name)
    model = model_zoo.load(name)
    metadata = dict(pretrained=name, epochs_trained=card["epochs"],
                    dataset=experiment_config.resolve(card["config"]).data.dataset,
                    bn_statistics=card["bn_statistics"], test_bounds=card["test_bounds"])
    return export_model(model, export_dir, version, limits, metadata, signature_version)
