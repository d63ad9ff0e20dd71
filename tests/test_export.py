"""End-to-end tests of `python -m tf_lvae.export`: a real trained model, exported and run the
way TF Serving runs it.

A tiny LVAE is trained for one epoch and exported twice: with signature version 2 (every input
batched; the default) and version 1 (scalar inputs, for older clients). In fresh processes
every signature runs with the TF1 session loader TF Serving uses (fed like its C++ server,
without Python's shape checks or casts) and with `tf.saved_model.load`; requests are merged the
way TF Serving's batching merges them (concatenated, padded with copies of a row, split again)
and compared row by row with the same requests sent alone; the warm-up records each export
writes are parsed with tensorflow-serving-api's protos and replayed through the TF1 loader;
`saved_model_cli show` / `run` read the export. The processes run concurrently in one fixture
to keep the file fast on 2 cores.
"""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from tf_lvae import data
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.model import generation
from tf_lvae.serving import signatures as serving
from tf_lvae.training import loop as training
from tf_lvae.serving import versioned_export
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.configs import quick
from tf_lvae.model.spec import ModelSpec
from tf_lvae.storage import checkpoints

REPO = Path(__file__).resolve().parents[1]
EXPORT_DOCS = REPO / "export"
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
NUM_IMAGES = 16
IW_SAMPLES = 200            # K of the log_likelihood checks (version 2: fixed at export)
IW_SEEDS = 5                # repetitions that measure the Monte-Carlo spread of L_K
MAX_NUM_SAMPLES = 50        # export caps, small so the "over the cap" cases are cheap
MAX_IW_SAMPLES = 500
LIMITS = serving.ServingLimits(MAX_NUM_SAMPLES, MAX_IW_SAMPLES, iw_chunk_size=64,
                               iw_samples=IW_SAMPLES)
LATENT, HIDDEN = (8, 4), (32, 16)
NUM_LAYERS = len(LATENT)
MERGED_ROWS, PADDED_ROWS = (2, 3), 8    # two requests merged, padded to an allowed batch size
# Float32 rounding: a sum of n terms rounded to nearest errs by about sqrt(n) * eps * the sum
# of their magnitudes (the random-walk model of rounding; Higham & Mary 2019). The longest sums
# are the encoder's 784 pixels (sqrt = 28) and a log-likelihood's 784 log-terms; activations are
# O(1) through a few layers and sigmoid's slope is <= 1/4. The same request alone or in another
# batch may take other matmul kernels and round differently, within these; a row mixed with
# another, or another seed, changes pixels by > 1e-2 and L_K by > 1e-2 nats.
EPS32 = np.finfo(np.float32).eps
PIXEL_ATOL = 8 * 28 * EPS32                 # ~2.7e-5: images (probabilities)
LOG_LIKELIHOOD_RTOL = 4 * 28 * EPS32        # ~1.3e-5 of ~100 nats


def _python(*args, **kwargs):
    return subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _saved_model_cli(*args):
    command = [str(SAVED_MODEL_CLI)] if SAVED_MODEL_CLI.exists() else [
        sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    return subprocess.Popen(command + list(args), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _signature_defs(saved_model_dir):
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    (meta_graph,) = [m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags]
    return meta_graph.signature_def


def _load_grpc_client():
    spec = importlib.util.spec_from_file_location("grpc_client", EXPORT_DOCS / "grpc_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _close(actual, expected, atol=PIXEL_ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=0, atol=atol)

# Run in a fresh process: every case of CASES.json through the TF1 session loader (fed like TF
# Serving's C++ server: no Python-side shape check or dtype cast) and tf.saved_model.load,
# valid and invalid inputs, and the "merged" cases the way TF Serving's batching runs them:
# the requests' inputs concatenated, padded with copies of the last request's first row up to
# an allowed batch size, run once and split again (tensorflow_serving/batching/
# batching_session.cc: MergeInputTensors, SplitOutputTensors). An input refers to an array
# of CASES.npz by name, or to rows [start, stop) of one. Writes OUT.npz and OUT.json (errors).
FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    saved_model_dir, cases_path, out_path = sys.argv[1:]
    cases = json.load(open(cases_path))
    arrays = dict(np.load(cases_path.replace(".json", ".npz")))

    def value_of(ref):
        if isinstance(ref, str):
            return arrays[ref]
        name, start, stop = ref
        return arrays[name][start:stop]

    def feeds_of(inputs):
        return {k: value_of(ref) for k, ref in inputs.items()}

    graph = tf.Graph()
    with graph.as_default():
        session = tf.compat.v1.Session()
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model_dir)

    def run_tf1(signature_name, feeds):
        signature = meta_graph.signature_def[signature_name]
        keys = sorted(signature.outputs)
        fetches = [graph.get_tensor_by_name(signature.outputs[k].name)._as_tf_output()
                   for k in keys]
        feed = {graph.get_tensor_by_name(signature.inputs[k].name)._as_tf_output():
                np.asarray(v) for k, v in feeds.items()}
        return dict(zip(keys, session._call_tf_sessionrun(None, feed, fetches, [], None)))

    loaded = tf.saved_model.load(saved_model_dir)

    def run_tf2(signature_name, feeds):
        outputs = loaded.signatures[signature_name](
            **{k: tf.constant(v) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def run_merged(signature_name, tasks, padded_rows):
        feeds = [feeds_of(task) for task in tasks]
        sizes = [len(next(iter(f.values()))) for f in feeds]
        padding = padded_rows - sum(sizes)
        merged = {k: np.concatenate([f[k] for f in feeds]
                                    + [np.repeat(feeds[-1][k][:1], padding, axis=0)])
                  for k in feeds[0]}
        outputs = run_tf1(signature_name, merged)
        assert all(len(v) == padded_rows for v in outputs.values()), signature_name
        bounds = np.cumsum([0] + sizes)
        return [{k: v[bounds[t]:bounds[t + 1]] for k, v in outputs.items()}
                for t in range(len(tasks))]

    results, errors = {}, {}
    for loader, run in (("tf1", run_tf1), ("tf2", run_tf2)):
        for name, case in cases["valid"].items():
            for key, value in run(case["signature"], feeds_of(case["inputs"])).items():
                results[f"{loader}/{name}/{key}"] = value
        for name, case in cases["invalid"].items():
            try:
                run(case["signature"], feeds_of(case["inputs"]))
                errors[f"{loader}/{name}"] = "ACCEPTED"
            except Exception as error:
                errors[f"{loader}/{name}"] = f"{type(error).__name__}: {error}"
    for name, case in cases.get("merged", {}).items():
        for t, outputs in enumerate(run_merged(case["signature"], case["tasks"],
                                               case["padded_rows"])):
            for key, value in outputs.items():
                results[f"tf1/{name}/task{t}/{key}"] = value
    np.savez(out_path + ".npz", **results)
    json.dump(errors, open(out_path + ".json", "w"))
""")

# Run in a fresh process: TF Serving's warm-up. Each export's assets.extra/
# tf_serving_warmup_requests is read as TFRecords, each record parsed as a PredictionLog with
# tensorflow-serving-api's protos, and its PredictRequest run through the TF1 session loader
# as TF Serving replays it. Writes {export: [{signature, inputs, outputs: shapes, finite}]}.
WARMUP_REPLAY_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out_path, *saved_model_dirs = sys.argv[1:]
    report = {}
    for saved_model_dir in saved_model_dirs:
        graph = tf.Graph()
        with graph.as_default():
            session = tf.compat.v1.Session()
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"],
                                                              saved_model_dir)
        path = os.path.join(saved_model_dir, "assets.extra", "tf_serving_warmup_requests")
        replayed = []
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog.FromString(record)
            assert log.WhichOneof("log_type") == "predict_log", log
            request = log.predict_log.request
            signature = meta_graph.signature_def[request.model_spec.signature_name]
            keys = sorted(signature.outputs)
            fetches = [graph.get_tensor_by_name(signature.outputs[k].name)._as_tf_output()
                       for k in keys]
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            feed = {graph.get_tensor_by_name(signature.inputs[k].name)._as_tf_output(): v
                    for k, v in inputs.items()}
            outputs = dict(zip(keys, session._call_tf_sessionrun(None, feed, fetches, [],
                                                                  None)))
            replayed.append(dict(
                signature=request.model_spec.signature_name,
                inputs={k: [v.dtype.name, list(v.shape)] for k, v in sorted(inputs.items())},
                outputs={k: list(v.shape) for k, v in outputs.items()},
                finite=bool(all(np.all(np.isfinite(v)) for v in outputs.values()))))
        report[saved_model_dir] = replayed
    json.dump(report, open(out_path, "w"))
""")


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = quick.get_config()
    config.data.num_validation = 50000        # train on the first 10000 images only
    config.train.epochs = 1
    config.train.warmup_epochs = 0
    config.train.eval_every_epochs = 0
    config.train.batch_size = 500
    config.train.jit_compile = False          # XLA compilation would dominate the run
    config.train.verbose = 0
    if "diagnostics_every_epochs" in config.train:
        config.train.diagnostics_every_epochs = 0
    config.model.latent_sizes = LATENT
    config.model.hidden_sizes = HIDDEN
    path = tmp_path_factory.mktemp("model_dir")
    training.train(config, str(path))
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    """The model as exported: the checkpoint with the batch-norm statistics it is served with."""
    model, config, _ = checkpoints.load_model(model_dir)
    batch_norm_statistics.for_evaluation(model, config)
    return model


@pytest.fixture(scope="module")
def exports(model_dir, tmp_path_factory):
    """{2: version 2 export (in-process), 1: version 1 export (through the CLI)}."""
    export_dir = tmp_path_factory.mktemp("exports")
    version_1 = _python("-m", "tf_lvae.export", f"--model_dir={model_dir}",
                        f"--export_dir={export_dir / 'lvae_v1'}", "--signature_version=1",
                        f"--max_num_samples={MAX_NUM_SAMPLES}",
                        f"--max_iw_samples={MAX_IW_SAMPLES}", "--iw_chunk_size=64",
                        f"--serving_iw_samples={IW_SAMPLES}")
    version_2 = versioned_export.export_model_dir(model_dir, export_dir / "lvae", limits=LIMITS)
    cli = _finish(version_1)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "(version 1)" in cli.stderr
    return {2: version_2, 1: Path(cli.stdout.strip().splitlines()[-1])}


@pytest.fixture(scope="module")
def exported(exports):
    return exports[2]


@pytest.fixture(scope="module")
def images():
    """The first test images of binarized MNIST (what the model was trained on)."""
    return data.load_arrays("binarized_mnist", "test")[0][:NUM_IMAGES]


@pytest.fixture(scope="module")
def noises(model):
    rng = np.random.default_rng(0)
    return {f"z{i}_noise": rng.standard_normal([5, size]).astype(np.float32)
            for i, size in enumerate(model.spec.latent_sizes, start=1)}


def _arrays(images, noises):
    """Every array a request refers to, by name."""
    rows = np.arange(NUM_IMAGES)
    arrays = dict(
        images=images, images_b=images[::-1].copy(), **noises,
        seeds6=np.arange(1, 7, dtype=np.int32),
        temps6=np.array([0.5, 0.9, 1.0, 1.2, 0.7, 1.0], np.float32),
        temperatures6=np.stack([np.linspace(0.5, 1.5, 6), np.linspace(1.2, 0.4, 6)],
                               -1).astype(np.float32),
        seeds7=np.full([6], 7, np.int32), temps09=np.full([6], 0.9, np.float32),
        seeds16=(100 + rows).astype(np.int32), layer16=(1 + rows % NUM_LAYERS).astype(np.int32),
        temp16=np.linspace(0.6, 1.4, NUM_IMAGES).astype(np.float32),
        weight16=np.linspace(0.0, 1.0, NUM_IMAGES).astype(np.float32),
        **{f"seed_all{s}": np.full([NUM_IMAGES], s, np.int32) for s in range(IW_SEEDS)})
    arrays["seeds6_other"] = arrays["seeds6"] + 50
    scalars = dict(int0=np.int32(0), int1=np.int32(1), int2=np.int32(2), int6=np.int32(6),
                   int7=np.int32(7), K=np.int32(IW_SAMPLES),
                   over_samples=np.int32(MAX_NUM_SAMPLES + 1),
                   over_K=np.int32(MAX_IW_SAMPLES + 1), minus1=np.int32(-1),
                   t09=np.float32(0.9), t0=np.float32(0.0), tneg=np.float32(-1.0),
                   int_pair=np.array([3, 4], np.int32), float3=np.float32(3.0))
    arrays.update(scalars)
    over = MAX_NUM_SAMPLES + 1
    arrays.update(
        flat_images=images.reshape(NUM_IMAGES, -1), rgb_images=np.repeat(images, 3, axis=-1),
        bright_images=images * 2.0, nan_images=images * np.nan, negative_images=images - 1.0,
        gray_images=images * 0.5 + 0.25, double_images=images.astype(np.float64),
        z1_wide=np.zeros([5, noises["z1_noise"].shape[1] + 1], np.float32),
        z2_short_batch=noises["z2_noise"][:3], z1_inf=noises["z1_noise"] * np.inf,
        seed_matrix=np.zeros([6, 1], np.int32), zeros6=np.zeros([6], np.float32),
        negative6=np.full([6], -1.0, np.float32), nan6=np.full([6], np.nan, np.float32),
        temps5=np.ones([5], np.float32), float_seeds6=np.arange(6, dtype=np.float32),
        seeds_over=np.arange(over, dtype=np.int32), temps_over=np.ones([over], np.float32),
        temperatures_wide=np.ones([6, NUM_LAYERS + 1], np.float32),
        temperatures_one_zero=np.array([[1.0, 0.0]] + [[1.0, 1.0]] * 5, np.float32),
        temperatures5=np.ones([5, NUM_LAYERS], np.float32),
        temperatures_over=np.ones([over, NUM_LAYERS], np.float32),
        layer_zero16=np.zeros([NUM_IMAGES], np.int32),
        layer_over16=np.full([NUM_IMAGES], NUM_LAYERS + 1, np.int32),
        layer_float16=np.ones([NUM_IMAGES], np.float32),
        zeros16=np.zeros([NUM_IMAGES], np.float32),
        weight_high16=np.full([NUM_IMAGES], 1.5, np.float32),
        weight_negative16=np.full([NUM_IMAGES], -0.1, np.float32),
        weight_nan16=np.full([NUM_IMAGES], np.nan, np.float32),
        seeds5=np.arange(5, dtype=np.int32), images5=images[:5])
    return arrays


def _base_requests(noises):
    """One request per version-2 signature, as input -> array name (5+ rows each)."""
    return dict(
        encode=dict(images="images"), reconstruct=dict(images="images"),
        decode={k: k for k in noises},
        sample=dict(seed="seeds6", temperature="temps6"),
        sample_per_layer=dict(seed="seeds6", temperatures="temperatures6"),
        keep_top=dict(images="images", layer="layer16", seed="seeds16", temperature="temp16"),
        interpolate=dict(images_a="images", images_b="images_b", layer="layer16",
                         weight="weight16"),
        log_likelihood=dict(images="images", seed="seeds16"))


def _rows_of(request, start, stop):
    return {k: [name, start, stop] for k, name in request.items()}


def _version_2_cases(noises):
    """(valid, invalid, merged) requests of the version-2 export, by case name."""
    base = _base_requests(noises)

    def case(signature, **changes):
        return dict(signature=signature, inputs=dict(base[signature], **changes))

    valid = {name: case(name) for name in base}
    valid.update(
        sample_again=case("sample"), sample_other_seeds=case("sample", seed="seeds6_other"),
        sample_seed7=case("sample", seed="seeds7", temperature="temps09"),
        log_likelihood_again=case("log_likelihood", seed="seed_all0"),
        **{f"log_likelihood_seed{s}": case("log_likelihood", seed=f"seed_all{s}")
           for s in range(IW_SEEDS)})
    valid["log_likelihood_first_alone"] = dict(
        signature="log_likelihood", inputs=_rows_of(dict(images="images", seed="seed_all0"),
                                                     0, 1))
    merged = {}
    first, second = MERGED_ROWS
    total = first + second
    for name, request in base.items():  # rows alone, all rows at once, and merged
        for r in range(total):
            valid[f"{name}_row{r}"] = dict(signature=name, inputs=_rows_of(request, r, r + 1))
        valid[f"{name}_rows"] = dict(signature=name, inputs=_rows_of(request, 0, total))
        merged[f"{name}_merged"] = dict(
            signature=name, padded_rows=PADDED_ROWS,
            tasks=[_rows_of(request, 0, first), _rows_of(request, first, total)])
    invalid = dict(
        encode_flat=case("encode", images="flat_images"),
        encode_rgb=case("encode", images="rgb_images"),
        encode_bright=case("encode", images="bright_images"),
        encode_nan=case("encode", images="nan_images"),
        encode_float64=case("encode", images="double_images"),
        reconstruct_negative=case("reconstruct", images="negative_images"),
        reconstruct_flat=case("reconstruct", images="flat_images"),
        decode_wide=case("decode", z1_noise="z1_wide"),
        decode_batch_mismatch=case("decode", z2_noise="z2_short_batch"),
        decode_inf=case("decode", z1_noise="z1_inf"),
        sample_scalar_seed=case("sample", seed="int1"),
        sample_seed_matrix=case("sample", seed="seed_matrix"),
        sample_zero_temperature=case("sample", temperature="zeros6"),
        sample_negative_temperature=case("sample", temperature="negative6"),
        sample_nan_temperature=case("sample", temperature="nan6"),
        sample_batch_mismatch=case("sample", temperature="temps5"),
        sample_over_cap=case("sample", seed="seeds_over", temperature="temps_over"),
        sample_float_seed=case("sample", seed="float_seeds6"),
        sample_per_layer_wide=case("sample_per_layer", temperatures="temperatures_wide"),
        sample_per_layer_zero=case("sample_per_layer", temperatures="temperatures_one_zero"),
        sample_per_layer_batch_mismatch=case("sample_per_layer", temperatures="temperatures5"),
        sample_per_layer_over_cap=case("sample_per_layer", seed="seeds_over",
                                       temperatures="temperatures_over"),
        keep_top_layer_zero=case("keep_top", layer="layer_zero16"),
        keep_top_layer_over=case("keep_top", layer="layer_over16"),
        keep_top_layer_float=case("keep_top", layer="layer_float16"),
        keep_top_zero_temperature=case("keep_top", temperature="zeros16"),
        keep_top_flat=case("keep_top", images="flat_images"),
        keep_top_bright=case("keep_top", images="bright_images"),
        keep_top_seed_mismatch=case("keep_top", seed="seeds5"),
        interpolate_weight_high=case("interpolate", weight="weight_high16"),
        interpolate_weight_negative=case("interpolate", weight="weight_negative16"),
        interpolate_weight_nan=case("interpolate", weight="weight_nan16"),
        interpolate_layer_over=case("interpolate", layer="layer_over16"),
        interpolate_layer_zero=case("interpolate", layer="layer_zero16"),
        interpolate_b_mismatch=case("interpolate", images_b="images5"),
        interpolate_b_bright=case("interpolate", images_b="bright_images"),
        interpolate_b_flat=case("interpolate", images_b="flat_images"),
        log_likelihood_gray=case("log_likelihood", images="gray_images"),
        log_likelihood_flat=case("log_likelihood", images="flat_images"),
        log_likelihood_seed_mismatch=case("log_likelihood", seed="seeds5"),
        log_likelihood_scalar_seed=case("log_likelihood", seed="int0"),
    )
    return valid, invalid, merged


def _version_1_cases():
    """(valid, invalid) requests of the version-1 export (scalar sample / log_likelihood)."""
    def sample(num_samples="int6", seed="int1", temperature="t09"):
        return dict(signature="sample", inputs=dict(num_samples=num_samples, seed=seed,
                                                    temperature=temperature))

    def log_likelihood(images="images", num_samples="K", seed="int0"):
        return dict(signature="log_likelihood",
                    inputs=dict(images=images, num_samples=num_samples, seed=seed))

    valid = dict(
        encode=dict(signature="encode", inputs=dict(images="images")),
        sample_seed1=sample(), sample_seed1_again=sample(), sample_seed2=sample(seed="int2"),
        sample_one_seed7=sample(num_samples="int1", seed="int7"),
        log_likelihood_first=log_likelihood(images=["images", 0, 1]))
    invalid = dict(
        v1_sample_zero=sample(num_samples="int0"),
        v1_sample_over_cap=sample(num_samples="over_samples"),
        v1_sample_zero_temperature=sample(temperature="t0"),
        v1_sample_negative_temperature=sample(temperature="tneg"),
        v1_sample_vector_count=sample(num_samples="int_pair"),
        v1_sample_float_count=sample(num_samples="float3"),
        v1_log_likelihood_gray=log_likelihood(images="gray_images"),
        v1_log_likelihood_flat=log_likelihood(images="flat_images"),
        v1_log_likelihood_zero_K=log_likelihood(num_samples="int0"),
        v1_log_likelihood_negative_K=log_likelihood(num_samples="minus1"),
        v1_log_likelihood_over_cap=log_likelihood(num_samples="over_K"),
    )
    return valid, invalid


IMAGE_SHAPE_ERROR = "images must have shape [batch, 28, 28, 1]"
PIXEL_ERROR = "images must be finite pixel values in [0, 1]"
LAYER_ERROR = f"layer must be in [1, {NUM_LAYERS}]"
# What the TF Serving-like feed must answer for each invalid case.
EXPECTED_ERRORS = dict(
    encode_flat=IMAGE_SHAPE_ERROR, encode_rgb=IMAGE_SHAPE_ERROR,
    encode_bright=PIXEL_ERROR, encode_nan=PIXEL_ERROR,
    encode_float64="to be float but double is provided",
    reconstruct_negative=PIXEL_ERROR, reconstruct_flat=IMAGE_SHAPE_ERROR,
    decode_wide=f"z1_noise must have shape [batch, {LATENT[0]}]",
    decode_batch_mismatch="z2_noise must have the batch size of z1_noise",
    decode_inf="z1_noise must be finite",
    sample_scalar_seed="[seed must have shape [batch], got shape] []",
    sample_seed_matrix="[seed must have shape [batch], got shape] [6 1]",
    sample_zero_temperature="temperature must be > 0",
    sample_negative_temperature="temperature must be > 0",
    sample_nan_temperature="temperature must be > 0",
    sample_batch_mismatch="temperature must have the batch size of seed",
    sample_over_cap=f"seed must have at most {MAX_NUM_SAMPLES} rows",
    sample_float_seed="to be int32 but float is provided",
    sample_per_layer_wide=f"temperatures must have shape [batch, {NUM_LAYERS}]",
    sample_per_layer_zero="temperatures must be > 0",
    sample_per_layer_batch_mismatch="temperatures must have the batch size of seed",
    sample_per_layer_over_cap=f"seed must have at most {MAX_NUM_SAMPLES} rows",
    keep_top_layer_zero=LAYER_ERROR, keep_top_layer_over=LAYER_ERROR,
    keep_top_layer_float="to be int32 but float is provided",
    keep_top_zero_temperature="temperature must be > 0",
    keep_top_flat=IMAGE_SHAPE_ERROR, keep_top_bright=PIXEL_ERROR,
    keep_top_seed_mismatch="seed must have the batch size of images",
    interpolate_weight_high="weight must be in [0, 1]",
    interpolate_weight_negative="weight must be in [0, 1]",
    interpolate_weight_nan="weight must be in [0, 1]",
    interpolate_layer_over=LAYER_ERROR, interpolate_layer_zero=LAYER_ERROR,
    interpolate_b_mismatch="images_b must have the batch size of images_a",
    interpolate_b_bright="images_b must be finite pixel values in [0, 1]",
    interpolate_b_flat="images_b must have shape [batch, 28, 28, 1]",
    log_likelihood_gray="needs binary images",
    log_likelihood_flat=IMAGE_SHAPE_ERROR,
    log_likelihood_seed_mismatch="seed must have the batch size of images",
    log_likelihood_scalar_seed="[seed must have shape [batch], got shape] []",
    v1_sample_zero="num_samples must be >= 1",
    v1_sample_over_cap=f"num_samples must be <= {MAX_NUM_SAMPLES}",
    v1_sample_zero_temperature="temperature must be > 0",
    v1_sample_negative_temperature="temperature must be > 0",
    v1_sample_vector_count="num_samples must be a scalar",
    v1_sample_float_count="to be int32 but float is provided",
    v1_log_likelihood_gray="needs binary images",
    v1_log_likelihood_flat=IMAGE_SHAPE_ERROR,
    v1_log_likelihood_zero_K="num_samples must be >= 1",
    v1_log_likelihood_negative_K="num_samples must be >= 1",
    v1_log_likelihood_over_cap=f"num_samples must be <= {MAX_IW_SAMPLES}",
)


@pytest.fixture(scope="module")
def fresh(exports, images, noises, tmp_path_factory):
    """Runs the fresh-process checks and saved_model_cli concurrently; returns their results."""
    work = tmp_path_factory.mktemp("fresh")
    np.savez(work / "cases.npz", **_arrays(images, noises))
    (work / "cases_v1.npz").write_bytes((work / "cases.npz").read_bytes())
    valid, invalid, merged = _version_2_cases(noises)
    (work / "cases.json").write_text(json.dumps(dict(valid=valid, invalid=invalid,
                                                     merged=merged)))
    valid_v1, invalid_v1 = _version_1_cases()
    (work / "cases_v1.json").write_text(json.dumps(dict(valid=valid_v1, invalid=invalid_v1)))
    np.save(work / "images.npy", images[:3])
    run = ["run", "--dir", str(exports[2]), "--tag_set", "serve", "--signature_def"]
    processes = dict(
        script=_python("-c", FRESH_PROCESS_SCRIPT, str(exports[2]), str(work / "cases.json"),
                       str(work / "out")),
        script_v1=_python("-c", FRESH_PROCESS_SCRIPT, str(exports[1]),
                          str(work / "cases_v1.json"), str(work / "out_v1")),
        warmup=_python("-c", WARMUP_REPLAY_SCRIPT, str(work / "warmup.json"),
                       str(exports[2]), str(exports[1])),
        show=_saved_model_cli("show", "--all", "--dir", str(exports[2])),
        sample=_saved_model_cli(*run, "sample", "--input_exprs",
                                "seed=[7, 8];temperature=[1.0, 0.5]",
                                "--outdir", str(work / "cli_sample")),
        keep_top=_saved_model_cli(*run, "keep_top", "--inputs",
                                  f"images={work / 'images.npy'}", "--input_exprs",
                                  "layer=[1, 2, 2];seed=[0, 1, 2];temperature=[1.0, 1.0, 1.0]",
                                  "--outdir", str(work / "cli_keep_top")),
        bad_sample=_saved_model_cli(*run, "sample", "--input_exprs",
                                    "seed=[7];temperature=[0.0]"),
    )
    finished = {name: _finish(process) for name, process in processes.items()}
    for name in ("script", "script_v1", "warmup"):
        assert finished[name].returncode == 0, finished[name].stderr[-3000:]
    errors = json.loads((work / "out.json").read_text())
    errors.update(json.loads((work / "out_v1.json").read_text()))
    return dict(processes=finished, work=work,
                outputs=dict(np.load(work / "out.npz")),
                outputs_v1=dict(np.load(work / "out_v1.npz")), errors=errors,
                warmup=json.loads((work / "warmup.json").read_text()))


# ------------------------------------------------------------------------------------- tests
def _inputs(signatures, name):
    return {k: (tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim])
            for k, v in signatures[name].inputs.items()}


def _outputs(signatures, name):
    return {k: [d.size for d in v.tensor_shape.dim]
            for k, v in signatures[name].outputs.items()}


def test_export_writes_one_complete_version_with_batched_signatures(exported, model):
    assert exported.name == "1"
    assert sorted(p.name for p in exported.parent.iterdir()) == ["1"]  # no staging left
    assert (exported / "saved_model.pb").is_file() and (exported / "variables").is_dir()
    extra = exported / "assets.extra"
    assert (extra / versioned_export.WARMUP_FILE).is_file()
    info = json.loads((extra / versioned_export.METADATA_FILE).read_text())
    assert info["signature_version"] == serving.SIGNATURE_VERSION == 2
    assert info["signatures"] == list(serving.SIGNATURES)
    assert info["limits"]["max_num_samples"] == MAX_NUM_SAMPLES
    assert info["limits"]["iw_samples"] == IW_SAMPLES
    assert ModelSpec(**info["model_spec"]) == model.spec

    signatures = _signature_defs(exported)
    assert set(serving.SIGNATURES) <= set(signatures)
    assert signatures["serving_default"].inputs["images"].dtype == tf.float32.as_datatype_enum
    for name in serving.SIGNATURES:  # what TF Serving's batching needs: a batch dim everywhere
        for key, (_, shape) in _inputs(signatures, name).items():
            assert shape and shape[0] == -1, (name, key, shape)
        for key, shape in _outputs(signatures, name).items():
            assert shape and shape[0] == -1, (name, key, shape)

    images = ("float32", [-1, 28, 28, 1])
    rows = dict(int32=("int32", [-1]), float32=("float32", [-1]))
    assert _inputs(signatures, "encode") == dict(images=images)
    assert _outputs(signatures, "encode") == {"z1_mean": [-1, 8], "z1_stddev": [-1, 8],
                                              "z2_mean": [-1, 4], "z2_stddev": [-1, 4]}
    assert _inputs(signatures, "sample") == dict(seed=rows["int32"],
                                                 temperature=rows["float32"])
    assert _inputs(signatures, "sample_per_layer") == dict(
        seed=rows["int32"], temperatures=("float32", [-1, NUM_LAYERS]))
    assert _inputs(signatures, "keep_top") == dict(images=images, layer=rows["int32"],
                                                   seed=rows["int32"],
                                                   temperature=rows["float32"])
    assert _inputs(signatures, "interpolate") == dict(images_a=images, images_b=images,
                                                      layer=rows["int32"],
                                                      weight=rows["float32"])
    for name in ("sample", "sample_per_layer", "keep_top", "interpolate", "decode",
                 "reconstruct"):
        assert _outputs(signatures, name) == dict(images=[-1, 28, 28, 1]), name
    assert _inputs(signatures, "decode") == dict(z1_noise=("float32", [-1, 8]),
                                                 z2_noise=("float32", [-1, 4]))
    assert _inputs(signatures, "reconstruct") == dict(images=images)
    assert _inputs(signatures, "log_likelihood") == dict(images=images, seed=rows["int32"])
    assert _outputs(signatures, "log_likelihood") == dict(log_likelihood=[-1])


def test_version_1_export_keeps_the_scalar_signatures(exports):
    exported_v1 = exports[1]
    info = json.loads((exported_v1 / "assets.extra" / versioned_export.METADATA_FILE)
                      .read_text())
    assert info["signature_version"] == 1
    assert info["signatures"] == list(serving.SIGNATURES_BY_VERSION[1])
    assert info["limits"] == dict(max_num_samples=MAX_NUM_SAMPLES,
                                  max_iw_samples=MAX_IW_SAMPLES, iw_chunk_size=64,
                                  iw_samples=IW_SAMPLES)   # the CLI's flags
    signatures = _signature_defs(exported_v1)
    assert set(serving.SIGNATURES_BY_VERSION[1]) <= set(signatures)
    version_2_only = set(serving.SIGNATURES) - set(serving.SIGNATURES_BY_VERSION[1])
    assert not version_2_only & set(signatures)          # no keep_top, interpolate, ...
    images = ("float32", [-1, 28, 28, 1])
    assert _inputs(signatures, "sample") == dict(num_samples=("int32", []),
                                                 seed=("int32", []),
                                                 temperature=("float32", []))
    assert _inputs(signatures, "log_likelihood") == dict(images=images,
                                                         num_samples=("int32", []),
                                                         seed=("int32", []))
    assert _inputs(signatures, "decode") == dict(z1_noise=("float32", [-1, 8]),
                                                 z2_noise=("float32", [-1, 4]))


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_the_export(fresh, model, images):
    processes, work = fresh["processes"], fresh["work"]
    show = processes["show"]
    assert show.returncode == 0, show.stderr[-2000:]
    for name in serving.SIGNATURES:
        assert f"signature_def['{name}']" in show.stdout
    for name in ("sample", "keep_top"):
        assert processes[name].returncode == 0, processes[name].stderr[-2000:]
    sampled = np.load(work / "cli_sample" / "images.npy")
    _close(sampled[0:1], model.sample(1, 1.0, 7))
    _close(sampled[1:2], model.sample(1, 0.5, 8))
    kept = np.load(work / "cli_keep_top" / "images.npy")
    _close(kept, generation.keep_top(model, images[:3], [1, 2, 2], [0, 1, 2], 1.0))
    _close(kept[0], model(images[:1], training=False)[0])     # k = 1: the reconstruction

    bad = processes["bad_sample"]
    assert bad.returncode != 0 and "temperature must be > 0" in bad.stderr


@pytest.mark.parametrize("loader", ["tf1", "tf2"])
@pytest.mark.slow
def test_encode_decode_reconstruct_match_the_in_memory_model(fresh, loader, model, images,
                                                             noises):
    outputs = fresh["outputs"]
    for i, (mean, stddev) in enumerate(model.encode(images), start=1):
        np.testing.assert_allclose(outputs[f"{loader}/encode/z{i}_mean"], mean,
                                   rtol=PIXEL_ATOL, atol=PIXEL_ATOL)
        np.testing.assert_allclose(outputs[f"{loader}/encode/z{i}_stddev"], stddev,
                                   rtol=PIXEL_ATOL, atol=PIXEL_ATOL)
    _close(outputs[f"{loader}/reconstruct/images"], model(images))
    _close(outputs[f"{loader}/decode/images"], model.decode_noise(list(noises.values())))


@pytest.mark.parametrize("loader", ["tf1", "tf2"])
@pytest.mark.slow
def test_sample_is_reproducible_by_seed_row_by_row(fresh, loader, model):
    outputs = fresh["outputs"]
    first = outputs[f"{loader}/sample/images"]
    assert first.shape == (6, 28, 28, 1) and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, outputs[f"{loader}/sample_again/images"])
    assert np.abs(first - outputs[f"{loader}/sample_other_seeds/images"]).max() > 1e-2
    seeds, temperatures = np.arange(1, 7), [0.5, 0.9, 1.0, 1.2, 0.7, 1.0]
    for r, (seed, temperature) in enumerate(zip(seeds, temperatures)):
        _close(first[r:r + 1], model.sample(1, temperature, int(seed)))
    # one seed for every row: the same image six times, version 1's single image of seed 7
    same = outputs[f"{loader}/sample_seed7/images"]
    assert np.abs(same - same[:1]).max() <= PIXEL_ATOL
    _close(same[:1], fresh["outputs_v1"][f"{loader}/sample_one_seed7/images"])


@pytest.mark.parametrize("loader", ["tf1", "tf2"])
@pytest.mark.slow
def test_version_1_sample_is_unchanged(fresh, loader, model):
    outputs = fresh["outputs_v1"]
    first = outputs[f"{loader}/sample_seed1/images"]
    np.testing.assert_array_equal(first, outputs[f"{loader}/sample_seed1_again/images"])
    assert np.abs(first - outputs[f"{loader}/sample_seed2/images"]).max() > 1e-2
    _close(first, model.sample(6, 0.9, 1))
    _close(outputs[f"{loader}/encode/z1_mean"], fresh["outputs"][f"{loader}/encode/z1_mean"])


@pytest.mark.parametrize("loader", ["tf1", "tf2"])
@pytest.mark.slow
def test_layerwise_signatures_match_tf_lvae_generation(fresh, loader, model, images, noises):
    outputs = fresh["outputs"]
    arrays = _arrays(images, noises)
    _close(outputs[f"{loader}/sample_per_layer/images"],
           generation.sample(model, arrays["seeds6"], arrays["temperatures6"]))
    kept = outputs[f"{loader}/keep_top/images"]
    _close(kept, generation.keep_top(model, images, arrays["layer16"], arrays["seeds16"],
                                     arrays["temp16"]))
    layer_1 = arrays["layer16"] == 1
    _close(kept[layer_1], model(images[layer_1], training=False))   # nothing redrawn
    assert np.abs(kept[~layer_1] - model(images[~layer_1], training=False)).max() > 1e-2
    between = outputs[f"{loader}/interpolate/images"]
    _close(between, generation.interpolate(model, images, arrays["images_b"],
                                           arrays["layer16"], arrays["weight16"]))
    _close(between[0], model(images[:1], training=False)[0])   # layer 1, weight 0: a itself


@pytest.mark.parametrize("signature", serving.SIGNATURES)
@pytest.mark.slow
def test_merged_requests_match_the_same_requests_alone(fresh, signature):
    """TF Serving's batching: two requests merged and padded, against each row sent alone."""
    outputs = fresh["outputs"]
    first, second = MERGED_ROWS
    keys = sorted(k.rsplit("/", 1)[1] for k in outputs
                  if k.startswith(f"tf1/{signature}_rows/"))
    assert keys, signature
    for key in keys:
        merged = np.concatenate([outputs[f"tf1/{signature}_merged/task{t}/{key}"]
                                 for t in range(2)])
        alone = np.concatenate([outputs[f"tf1/{signature}_row{r}/{key}"]
                                for r in range(first + second)])
        together = outputs[f"tf1/{signature}_rows/{key}"]
        assert merged.shape == alone.shape == together.shape
        assert len(merged) == first + second
        if key == "log_likelihood":
            tolerance = dict(rtol=LOG_LIKELIHOOD_RTOL, atol=0)
        else:
            tolerance = dict(rtol=PIXEL_ATOL, atol=PIXEL_ATOL)
        np.testing.assert_allclose(merged, alone, **tolerance)
        np.testing.assert_allclose(together, alone, **tolerance)
        spread = np.abs(alone - alone[:1]).max()
        assert spread > 1e-2, f"{signature}/{key}: the rows are alike, proving nothing"


@pytest.mark.slow
def test_log_likelihood_agrees_with_tf_lvae_evaluation(fresh, model, images):
    outputs = fresh["outputs"]
    per_seed = np.stack([outputs[f"tf1/log_likelihood_seed{s}/log_likelihood"]
                         for s in range(IW_SEEDS)])                        # [seeds, B]
    assert per_seed.shape == (IW_SEEDS, NUM_IMAGES) and np.all(np.isfinite(per_seed))
    np.testing.assert_array_equal(per_seed[0],
                                  outputs["tf1/log_likelihood_again/log_likelihood"])
    np.testing.assert_allclose(per_seed[0], outputs["tf2/log_likelihood_seed0/log_likelihood"],
                               rtol=LOG_LIKELIHOOD_RTOL)
    assert np.abs(per_seed[0] - per_seed[1]).max() > 0  # seeds matter
    # a row's seed alone decides its bound: version 1's single image, same K and seed
    alone = outputs["tf1/log_likelihood_first_alone/log_likelihood"]
    np.testing.assert_allclose(alone, per_seed[0][:1], rtol=LOG_LIKELIHOOD_RTOL)
    np.testing.assert_allclose(
        alone, fresh["outputs_v1"]["tf1/log_likelihood_first/log_likelihood"],
        rtol=LOG_LIKELIHOOD_RTOL)

    reference = evaluation.evaluate_images(model, images, iw_samples=IW_SAMPLES,
                                           jit_compile=False, verbose=0)
    # Standard error of a mean over the batch of one L_K estimate, from the seeds' spread;
    # the served and the reference estimate each carry it.
    standard_error = per_seed.mean(axis=1).std(ddof=1)
    tolerance = 4 * np.sqrt(2) * standard_error + 1e-3
    assert abs(per_seed[0].mean() - reference["iw_bound"]) <= tolerance, (
        per_seed.mean(axis=1), reference["iw_bound"], tolerance)
    assert per_seed.mean() > reference["elbo"]  # L_K >= L_1 on average


@pytest.mark.parametrize("case", sorted(EXPECTED_ERRORS))
@pytest.mark.slow
def test_bad_inputs_are_refused_with_a_clear_error(fresh, case):
    served = fresh["errors"][f"tf1/{case}"]
    assert EXPECTED_ERRORS[case] in served, served[:2000]
    assert "InvalidArgumentError" in served, served[:2000]
    in_python = fresh["errors"][f"tf2/{case}"]
    assert in_python != "ACCEPTED", case


def test_every_new_signature_has_bad_request_cases():
    valid, invalid, _ = _version_2_cases({"z1_noise": None, "z2_noise": None})
    assert set(invalid) == {k for k in EXPECTED_ERRORS if not k.startswith("v1_")}
    refused = {case["signature"] for case in invalid.values()}
    assert refused == set(serving.SIGNATURES)


@pytest.mark.parametrize("signature_version", [2, 1])
@pytest.mark.slow
def test_warmup_records_replay_through_the_tf1_loader(fresh, exports, signature_version):
    replayed = fresh["warmup"][str(exports[signature_version])]
    assert [r["signature"] for r in replayed] == list(
        serving.SIGNATURES_BY_VERSION[signature_version])            # one per signature
    for record in replayed:
        assert record["finite"], record
        assert record["outputs"] and all(shape[0] == 1 for shape in record["outputs"].values()
                                         ), record                  # one small request
        if signature_version == 2:
            assert all(shape and shape[0] == 1 for _, shape in record["inputs"].values())
    by_name = {r["signature"]: r for r in replayed}
    assert by_name["encode"]["outputs"] == {"z1_mean": [1, 8], "z1_stddev": [1, 8],
                                            "z2_mean": [1, 4], "z2_stddev": [1, 4]}
    assert by_name["log_likelihood"]["outputs"] == {"log_likelihood": [1]}


def test_warmup_records_are_the_serving_apis_prediction_logs():
    inputs = dict(seed=np.array([3, 4], np.int32), temperature=np.array([1.0, 0.5], np.float32))
    expected = prediction_log_pb2.PredictionLog()
    request = expected.predict_log.request
    request.model_spec.signature_name = "sample"
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    parsed = prediction_log_pb2.PredictionLog.FromString(
        versioned_export.prediction_log("sample", inputs))
    assert parsed == expected
    long_name = "x" * 300                                           # a two-byte length
    parsed = prediction_log_pb2.PredictionLog.FromString(
        versioned_export.prediction_log(long_name, {}))
    assert parsed.predict_log.request.model_spec.signature_name == long_name


def test_evaluation_streams_a_tensor_K_like_a_python_K(model, images):
    """The serving path (tensor K, dynamic chunks) draws the same samples as the static one."""
    static = evaluation.iw_bound_per_example(model, images, 150, 64, seed=3)
    dynamic = tf.function(lambda k: evaluation.iw_bound_per_example(model, images, k, 64,
                                                                     seed=3))(tf.constant(150))
    np.testing.assert_allclose(dynamic, static, rtol=1e-6)
    other_seed = evaluation.iw_bound_per_example(model, images, 150, 64, seed=4)
    assert np.abs(other_seed - static).max() > 0


def _assert_request_fits(request, signatures):
    assert isinstance(request, predict_pb2.PredictRequest)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    signature = signatures[request.model_spec.signature_name]
    assert set(request.inputs) == set(signature.inputs), request.model_spec.signature_name
    for key, proto in request.inputs.items():
        expected = signature.inputs[key]
        assert proto.dtype == expected.dtype, key
        shape = tf.TensorShape([d.size for d in proto.tensor_shape.dim])
        expected_shape = tf.TensorShape([None if d.size == -1 else d.size
                                         for d in expected.tensor_shape.dim])
        assert expected_shape.is_compatible_with(shape), (key, shape, expected_shape)


def test_grpc_requests_validate_against_the_exported_signatures(exports, images, noises):
    client = _load_grpc_client()
    signatures = _signature_defs(exports[2])
    requests = [
        client.encode_request(images), client.reconstruct_request(images),
        client.sample_request(range(4), temperature=0.5), client.decode_request(noises),
        client.sample_per_layer_request([1, 2, 3], [1.0, 0.5]),
        client.keep_top_request(images, layer=2, seeds=range(NUM_IMAGES)),
        client.interpolate_request(images, images[::-1], layer=1,
                                   weights=np.linspace(0, 1, NUM_IMAGES)),
        client.log_likelihood_request(images, seeds=2),
    ]
    assert {r.model_spec.signature_name for r in requests} == set(serving.SIGNATURES)
    for request in requests:
        _assert_request_fits(request, signatures)
    signatures_v1 = _signature_defs(exports[1])
    for request in (client.sample_v1_request(4, seed=1, temperature=0.5),
                    client.log_likelihood_v1_request(images, num_samples=100, seed=2)):
        _assert_request_fits(request, signatures_v1)


class _SessionBackedPredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict like TF Serving: a TF1 session over the SavedModel, fed the request's tensors."""

    def __init__(self, saved_model_dir):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.session = tf.compat.v1.Session()
            self.meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, ["serve"], str(saved_model_dir))

    def Predict(self, request, context):
        signature = self.meta_graph.signature_def[request.model_spec.signature_name]
        tensor = self.graph.get_tensor_by_name
        fetches = {k: tensor(v.name) for k, v in signature.outputs.items()}
        feeds = {tensor(signature.inputs[k].name): tf.make_ndarray(v)
                 for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for key, value in self.session.run(fetches, feeds).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


def test_grpc_client_round_trip(exported, model, images):
    from concurrent import futures
    client = _load_grpc_client()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _SessionBackedPredictionService(exported), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        address = f"localhost:{port}"
        samples = client.predict(address, client.sample_request([5, 6, 7], temperature=1.0))
        means = client.predict(address, client.encode_request(images[:2]))
        path = client.predict(address, client.interpolate_request(
            np.repeat(images[:1], 3, 0), np.repeat(images[1:2], 3, 0), 1, [0.0, 0.5, 1.0]))
    finally:
        server.stop(None)
    for r, seed in enumerate([5, 6, 7]):
        _close(samples["images"][r:r + 1], model.sample(1, 1.0, seed))
    _close(means["z1_mean"], model.encode(images[:2])[0][0])
    _close(path["images"][[0, 2]], model(images[:2], training=False))  # the two endpoints


def test_example_rest_requests_match_the_signatures(exported):
    """export/requests/*.json use the columnar format; decode and sample_per_layer's are for
    the paper's 5 layers."""
    signatures = _signature_defs(exported)
    paper = ModelSpec()
    for name in serving.SIGNATURES:
        body = json.loads((EXPORT_DOCS / "requests" / f"{name}.json").read_text())
        assert body["signature_name"] == name and set(body) == {"signature_name", "inputs"}
        inputs = body["inputs"]
        batch_sizes = {len(value) for value in inputs.values()}
        assert len(batch_sizes) == 1, name                       # one batch size per request
        if name == "decode":
            assert {k: np.shape(v) for k, v in inputs.items()} == {
                f"z{i}_noise": (1, size) for i, size in enumerate(paper.latent_sizes, 1)}
            continue
        assert set(inputs) == set(signatures[name].inputs)
        if name == "sample_per_layer":
            assert np.shape(inputs["temperatures"])[1] == paper.num_layers
            continue
        for key, value in inputs.items():
            expected = [d.size for d in signatures[name].inputs[key].tensor_shape.dim]
            shape = list(np.shape(value))
            assert len(shape) == len(expected) and all(
                e in (-1, s) for e, s in zip(expected, shape)), (name, key)
        for key in ("images", "images_a", "images_b"):
            if key in inputs:
                assert set(np.unique(inputs[key])) <= {0.0, 1.0}
        if "layer" in inputs:
            assert all(1 <= k <= paper.num_layers for k in inputs["layer"])


def _batching_parameters_class():
    """BatchingParameters of tensorflow_serving/servables/tensorflow/session_bundle_config.proto
    (not in the tensorflow-serving-api wheel), built from its field list to parse the file."""
    wrappers = "google/protobuf/wrappers.proto"
    pool = descriptor_pool.DescriptorPool()
    from google.protobuf import wrappers_pb2
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="batching_parameters.proto",
                                              package="tensorflow.serving",
                                              dependency=[wrappers], syntax="proto3")
    message = file.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name in enumerate(("max_batch_size", "batch_timeout_micros",
                                   "max_enqueued_batches", "num_batch_threads"), start=1):
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                          type_name=".google.protobuf.Int64Value", label=field.LABEL_OPTIONAL)
    message.field.add(name="thread_pool_name", number=5, type=field.TYPE_MESSAGE,
                      type_name=".google.protobuf.StringValue", label=field.LABEL_OPTIONAL)
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                      label=field.LABEL_REPEATED)
    message.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                      label=field.LABEL_OPTIONAL)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def test_models_config_batching_config_and_readme_agree(exported):
    config = text_format.Parse((EXPORT_DOCS / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "lvae" and model.base_path == "/models/lvae"
    assert model.model_platform == "tensorflow"

    batching = text_format.Parse((EXPORT_DOCS / "batching.config").read_text(),
                                 _batching_parameters_class()())
    sizes = list(batching.allowed_batch_sizes)
    assert batching.max_batch_size.value >= 1 and batching.num_batch_threads.value >= 1
    assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value
    # a merged batch never exceeds what the export accepts in one `sample` request
    assert batching.max_batch_size.value <= serving.ServingLimits().max_num_samples

    readme = (EXPORT_DOCS / "README.md").read_text()
    assert "docker run" in readme and "tensorflow/serving" in readme
    assert "python -m tf_lvae.export" in readme
    assert "--enable_batching" in readme and "--batching_parameters_file" in readme
    assert versioned_export.WARMUP_FILE in readme and "--signature_version=1" in readme
    for name in serving.SIGNATURES:
        assert f"| `{name}`" in readme, name                     # a row of the table
        assert f"requests/{name}.json" in readme, name


def test_cli_refuses_a_model_dir_without_checkpoint(model_dir, tmp_path):
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / model_dir_lib.SPEC_FILE).write_text(
        (model_dir / model_dir_lib.SPEC_FILE).read_text())
    export_dir = tmp_path / "exports"
    result = _finish(_python("-m", "tf_lvae.export", f"--model_dir={untrained}",
                             f"--export_dir={export_dir}"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no trained checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not export_dir.exists()

    with pytest.raises(model_dir_lib.ModelDirError, match="does not exist"):
        versioned_export.export_model_dir(tmp_path / "missing", export_dir)
    assert not export_dir.exists()


def test_an_existing_version_is_never_overwritten(model, exported, tmp_path):
    before = sorted(p.name for p in exported.parent.iterdir())
    with pytest.raises(versioned_export.ExportError, match="already exists"):
        versioned_export.export_model(model, exported.parent, version=1)
    with pytest.raises(ValueError, match="positive"):
        versioned_export.export_model(model, exported.parent, version=0)
    assert sorted(p.name for p in exported.parent.iterdir()) == before
    assert versioned_export.next_version(exported.parent) == 2
    with pytest.raises(ValueError, match=r"signature_version must be one of \[1, 2\]"):
        versioned_export.export_model(model, tmp_path / "new", signature_version=3)
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="iw_samples must be an integer >= 1"):
        serving.ServingLimits(iw_samples=0)


def test_a_crash_before_the_rename_leaves_no_version(model, tmp_path, monkeypatch):
    export_dir = tmp_path / "exports"
    export_dir.mkdir()
    (export_dir / "3").mkdir()  # an earlier version

    def crash(staging, final):
        assert (Path(staging) / "saved_model.pb").is_file()  # written and checked, not moved
        assert (Path(staging) / "assets.extra" / versioned_export.WARMUP_FILE).is_file()
        raise OSError("simulated crash during the final rename")

    monkeypatch.setattr(versioned_export, "_move_into_place", crash)
    with pytest.raises(OSError, match="simulated crash"):
        versioned_export.export_model(model, export_dir, limits=LIMITS, signature_version=1)
    assert sorted(p.name for p in export_dir.iterdir()) == ["3"]


@pytest.mark.slow
def test_a_killed_export_leaves_nothing_tf_serving_would_load(model_dir, tmp_path):
    """The process dies (no cleanup runs) right after the SavedModel files are written."""
    export_dir = tmp_path / "exports"
    script = textwrap.dedent(f"""
        import os
        from keras.src.backend.tensorflow.export import TFExportArchive
        from tf_lvae.serving import versioned_export
        original = TFExportArchive.write_out
        def write_then_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            os._exit(9)
        TFExportArchive.write_out = write_then_die
        versioned_export.export_model_dir({str(model_dir)!r}, {str(export_dir)!r})
    """)
    result = _finish(_python("-c", script))
    assert result.returncode == 9, result.stderr[-2000:]
    leftovers = list(export_dir.iterdir())
    assert leftovers and all(p.name.startswith(versioned_export.STAGING_PREFIX)
                             for p in leftovers)  # a hidden staging folder, no number
    assert not any(p.name.isdigit() for p in leftovers)
    assert versioned_export.next_version(export_dir) == 1
