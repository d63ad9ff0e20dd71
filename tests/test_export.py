"""End-to-end tests of `python -m tf_lvae.export`: a real trained model, exported and run the
way TF Serving runs it.

A tiny LVAE is trained for one epoch, exported, and every signature is run in fresh processes:
with the TF1 session loader TF Serving uses (fed like its C++ server, without Python's shape
checks or casts), with `tf.saved_model.load`, and with `saved_model_cli show` / `run`. The
processes run concurrently in one fixture to keep the file fast on 2 cores.
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
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from tf_lvae import data, evaluation, serving, training, versioned_export
from tf_lvae import model_dir as model_dir_lib
from tf_lvae.configs import quick
from tf_lvae.model_spec import ModelSpec

REPO = Path(__file__).resolve().parents[1]
EXPORT_DOCS = REPO / "export"
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
NUM_IMAGES = 16
IW_SAMPLES = 200            # K of the log_likelihood checks
IW_SEEDS = 5                # repetitions that measure the Monte-Carlo spread of L_K
MAX_NUM_SAMPLES = 50        # export caps, small so the "over the cap" cases are cheap
MAX_IW_SAMPLES = 500
LIMITS = serving.ServingLimits(MAX_NUM_SAMPLES, MAX_IW_SAMPLES, iw_chunk_size=64)

# Run in a fresh process: every signature through the TF1 session loader (fed like TF
# Serving's C++ server: no Python-side shape check or dtype cast) and tf.saved_model.load,
# valid and invalid inputs. Writes outputs to OUT.npz and error messages to OUT.json.
FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    saved_model_dir, cases_path, out_path = sys.argv[1:]
    cases = json.load(open(cases_path))
    arrays = dict(np.load(cases_path.replace(".json", ".npz")))

    def feeds_of(case):
        return {k: arrays[v] for k, v in case["inputs"].items()}

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

    results, errors = {}, {}
    for loader, run in (("tf1", run_tf1), ("tf2", run_tf2)):
        for name, case in cases["valid"].items():
            for key, value in run(case["signature"], feeds_of(case)).items():
                results[f"{loader}/{name}/{key}"] = value
        for name, case in cases["invalid"].items():
            try:
                run(case["signature"], feeds_of(case))
                errors[f"{loader}/{name}"] = "ACCEPTED"
            except Exception as error:
                errors[f"{loader}/{name}"] = f"{type(error).__name__}: {error}"
    np.savez(out_path + ".npz", **results)
    json.dump(errors, open(out_path + ".json", "w"))
""")


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
    config.model.latent_sizes = (8, 4)
    config.model.hidden_sizes = (32, 16)
    path = tmp_path_factory.mktemp("model_dir")
    training.train(config, str(path))
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return model_dir_lib.load_model(model_dir)[0]


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("exports") / "lvae"
    return versioned_export.export_model_dir(model_dir, export_dir, limits=LIMITS)


@pytest.fixture(scope="module")
def images():
    """The first test images of binarized MNIST (what the model was trained on)."""
    return data.load_arrays("binarized_mnist", "test")[0][:NUM_IMAGES]


@pytest.fixture(scope="module")
def noises(model):
    rng = np.random.default_rng(0)
    return {f"z{i}_noise": rng.standard_normal([5, size]).astype(np.float32)
            for i, size in enumerate(model.spec.latent_sizes, start=1)}


def _cases(images, noises):
    """(valid, invalid, arrays): requests per case name, as input-name -> array-name."""
    arrays = dict(images=images, **noises)
    scalars = dict(int0=np.int32(0), int1=np.int32(1), int2=np.int32(2), int6=np.int32(6),
                   K=np.int32(IW_SAMPLES), over_samples=np.int32(MAX_NUM_SAMPLES + 1),
                   over_K=np.int32(MAX_IW_SAMPLES + 1), minus1=np.int32(-1),
                   t09=np.float32(0.9), t0=np.float32(0.0), tneg=np.float32(-1.0),
                   int_pair=np.array([3, 4], np.int32), float3=np.float32(3.0))
    scalars.update({f"seed{s}": np.int32(s) for s in range(IW_SEEDS)})
    arrays.update(scalars)
    arrays.update(
        flat_images=images.reshape(NUM_IMAGES, -1), rgb_images=np.repeat(images, 3, axis=-1),
        bright_images=images * 2.0, nan_images=images * np.nan, negative_images=images - 1.0,
        gray_images=images * 0.5 + 0.25, double_images=images.astype(np.float64),
        z1_wide=np.zeros([5, noises["z1_noise"].shape[1] + 1], np.float32),
        z2_short_batch=noises["z2_noise"][:3], z1_inf=noises["z1_noise"] * np.inf)
    noise_inputs = {k: k for k in noises}

    def sample(num_samples="int6", seed="int1", temperature="t09"):
        return dict(signature="sample", inputs=dict(num_samples=num_samples, seed=seed,
                                                    temperature=temperature))

    def log_likelihood(images="images", num_samples="K", seed="seed0"):
        return dict(signature="log_likelihood",
                    inputs=dict(images=images, num_samples=num_samples, seed=seed))

    valid = dict(
        encode=dict(signature="encode", inputs=dict(images="images")),
        reconstruct=dict(signature="reconstruct", inputs=dict(images="images")),
        decode=dict(signature="decode", inputs=noise_inputs),
        sample_seed1=sample(), sample_seed1_again=sample(), sample_seed2=sample(seed="int2"),
        log_likelihood_again=log_likelihood(),
        **{f"log_likelihood_seed{s}": log_likelihood(seed=f"seed{s}") for s in range(IW_SEEDS)})
    invalid = dict(
        encode_flat=dict(signature="encode", inputs=dict(images="flat_images")),
        encode_rgb=dict(signature="encode", inputs=dict(images="rgb_images")),
        encode_bright=dict(signature="encode", inputs=dict(images="bright_images")),
        encode_nan=dict(signature="encode", inputs=dict(images="nan_images")),
        encode_float64=dict(signature="encode", inputs=dict(images="double_images")),
        reconstruct_negative=dict(signature="reconstruct", inputs=dict(images="negative_images")),
        reconstruct_flat=dict(signature="reconstruct", inputs=dict(images="flat_images")),
        sample_zero=sample(num_samples="int0"),
        sample_over_cap=sample(num_samples="over_samples"),
        sample_zero_temperature=sample(temperature="t0"),
        sample_negative_temperature=sample(temperature="tneg"),
        sample_vector_count=sample(num_samples="int_pair"),
        sample_float_count=sample(num_samples="float3"),
        decode_wide=dict(signature="decode", inputs=dict(noise_inputs, z1_noise="z1_wide")),
        decode_batch_mismatch=dict(signature="decode",
                                   inputs=dict(noise_inputs, z2_noise="z2_short_batch")),
        decode_inf=dict(signature="decode", inputs=dict(noise_inputs, z1_noise="z1_inf")),
        log_likelihood_gray=log_likelihood(images="gray_images"),
        log_likelihood_flat=log_likelihood(images="flat_images"),
        log_likelihood_zero_K=log_likelihood(num_samples="int0"),
        log_likelihood_negative_K=log_likelihood(num_samples="minus1"),
        log_likelihood_over_cap=log_likelihood(num_samples="over_K"),
    )
    return valid, invalid, arrays


# What the TF Serving-like feed must answer for each invalid case.
EXPECTED_ERRORS = dict(
    encode_flat="images must have shape [batch, 28, 28, 1]",
    encode_rgb="images must have shape [batch, 28, 28, 1]",
    encode_bright="images must be finite pixel values in [0, 1]",
    encode_nan="images must be finite pixel values in [0, 1]",
    encode_float64="to be float but double is provided",
    reconstruct_negative="images must be finite pixel values in [0, 1]",
    reconstruct_flat="images must have shape [batch, 28, 28, 1]",
    sample_zero="num_samples must be >= 1",
    sample_over_cap=f"num_samples must be <= {MAX_NUM_SAMPLES}",
    sample_zero_temperature="temperature must be > 0",
    sample_negative_temperature="temperature must be > 0",
    sample_vector_count="num_samples must be a scalar",
    sample_float_count="to be int32 but float is provided",
    decode_wide="z1_noise must have shape [batch, 8]",
    decode_batch_mismatch="z2_noise must have the batch size of z1_noise",
    decode_inf="z1_noise must be finite",
    log_likelihood_gray="needs binary images",
    log_likelihood_flat="images must have shape [batch, 28, 28, 1]",
    log_likelihood_zero_K="num_samples must be >= 1",
    log_likelihood_negative_K="num_samples must be >= 1",
    log_likelihood_over_cap=f"num_samples must be <= {MAX_IW_SAMPLES}",
)


@pytest.fixture(scope="module")
def fresh(exported, images, noises, tmp_path_factory):
    """Runs the fresh-process checks and saved_model_cli concurrently; returns their results."""
    work = tmp_path_factory.mktemp("fresh")
    valid, invalid, arrays = _cases(images, noises)
    (work / "cases.json").write_text(json.dumps(dict(valid=valid, invalid=invalid)))
    np.savez(work / "cases.npz", **arrays)
    np.save(work / "images.npy", images)
    np.savez(work / "noises.npz", **noises)
    noise_inputs = ";".join(f"{k}={work / 'noises.npz'}[{k}]" for k in noises)
    run = ["run", "--dir", str(exported), "--tag_set", "serve", "--signature_def"]
    processes = dict(
        script=_python("-c", FRESH_PROCESS_SCRIPT, str(exported), str(work / "cases.json"),
                       str(work / "out")),
        show=_saved_model_cli("show", "--all", "--dir", str(exported)),
        encode=_saved_model_cli(*run, "encode", "--inputs", f"images={work / 'images.npy'}",
                                "--outdir", str(work / "cli_encode")),
        reconstruct=_saved_model_cli(*run, "reconstruct", "--inputs",
                                     f"images={work / 'images.npy'}",
                                     "--outdir", str(work / "cli_reconstruct")),
        decode=_saved_model_cli(*run, "decode", "--inputs", noise_inputs,
                                "--outdir", str(work / "cli_decode")),
        sample=_saved_model_cli(*run, "sample", "--input_exprs",
                                "num_samples=4;seed=7;temperature=1.0",
                                "--outdir", str(work / "cli_sample")),
        log_likelihood=_saved_model_cli(*run, "log_likelihood", "--inputs",
                                        f"images={work / 'images.npy'}", "--input_exprs",
                                        "num_samples=10;seed=0",
                                        "--outdir", str(work / "cli_log_likelihood")),
        bad_sample=_saved_model_cli(*run, "sample", "--input_exprs",
                                    "num_samples=0;seed=7;temperature=1.0"),
    )
    finished = {name: _finish(process) for name, process in processes.items()}
    assert finished["script"].returncode == 0, finished["script"].stderr[-3000:]
    return dict(processes=finished, work=work,
                outputs=dict(np.load(work / "out.npz")),
                errors=json.loads((work / "out.json").read_text()))


# ------------------------------------------------------------------------------------- tests
def test_export_writes_one_complete_version_with_plain_tensor_signatures(exported, model):
    assert exported.name == "1"
    assert sorted(p.name for p in exported.parent.iterdir()) == ["1"]  # no staging left
    assert (exported / "saved_model.pb").is_file() and (exported / "variables").is_dir()
    info = json.loads((exported / "assets.extra" / versioned_export.METADATA_FILE).read_text())
    assert info["signatures"] == list(serving.SIGNATURES)
    assert info["limits"]["max_num_samples"] == MAX_NUM_SAMPLES
    assert ModelSpec(**info["model_spec"]) == model.spec

    signatures = _signature_defs(exported)
    assert set(serving.SIGNATURES) <= set(signatures)
    assert signatures["serving_default"].inputs["images"].dtype == tf.float32.as_datatype_enum

    def inputs(name):
        return {k: (tf.dtypes.as_dtype(v.dtype).name, [d.size for d in v.tensor_shape.dim])
                for k, v in signatures[name].inputs.items()}

    def outputs(name):
        return {k: [d.size for d in v.tensor_shape.dim]
                for k, v in signatures[name].outputs.items()}

    images = ("float32", [-1, 28, 28, 1])
    assert inputs("encode") == dict(images=images)
    assert outputs("encode") == {"z1_mean": [-1, 8], "z1_stddev": [-1, 8],
                                 "z2_mean": [-1, 4], "z2_stddev": [-1, 4]}
    assert inputs("sample") == dict(num_samples=("int32", []), seed=("int32", []),
                                    temperature=("float32", []))
    assert outputs("sample") == dict(images=[-1, 28, 28, 1])
    assert inputs("decode") == dict(z1_noise=("float32", [-1, 8]), z2_noise=("float32", [-1, 4]))
    assert outputs("decode") == dict(images=[-1, 28, 28, 1])
    assert inputs("reconstruct") == dict(images=images)
    assert inputs("log_likelihood") == dict(images=images, num_samples=("int32", []),
                                            seed=("int32", []))
    assert outputs("log_likelihood") == dict(log_likelihood=[-1])


def test_saved_model_cli_shows_and_runs_every_signature(fresh, model, images, noises):
    processes, work = fresh["processes"], fresh["work"]
    show = processes["show"]
    assert show.returncode == 0, show.stderr[-2000:]
    for name in serving.SIGNATURES:
        assert f"signature_def['{name}']" in show.stdout
    for name in serving.SIGNATURES:
        assert processes[name].returncode == 0, processes[name].stderr[-2000:]

    def cli_output(name, key):
        return np.load(work / f"cli_{name}" / f"{key}.npy")

    means = model.encode(images)
    np.testing.assert_allclose(cli_output("encode", "z1_mean"), means[0][0], atol=1e-5)
    np.testing.assert_allclose(cli_output("encode", "z2_stddev"), means[1][1], atol=1e-5)
    np.testing.assert_allclose(cli_output("sample", "images"), model.sample(4, 1.0, 7),
                               atol=1e-5)
    np.testing.assert_allclose(cli_output("reconstruct", "images"), model(images), atol=1e-5)
    np.testing.assert_allclose(cli_output("decode", "images"),
                               model.decode_noise(list(noises.values())), atol=1e-5)
    log_likelihood = cli_output("log_likelihood", "log_likelihood")
    assert log_likelihood.shape == (NUM_IMAGES,) and np.all(log_likelihood < 0)

    bad = processes["bad_sample"]
    assert bad.returncode != 0 and "num_samples must be >= 1" in bad.stderr


@pytest.mark.parametrize("loader", ["tf1", "tf2"])
def test_encode_decode_reconstruct_match_the_in_memory_model(fresh, loader, model, images,
                                                             noises):
    outputs = fresh["outputs"]
    for i, (mean, stddev) in enumerate(model.encode(images), start=1):
        np.testing.assert_allclose(outputs[f"{loader}/encode/z{i}_mean"], mean, atol=1e-5)
        np.testing.assert_allclose(outputs[f"{loader}/encode/z{i}_stddev"], stddev, atol=1e-5)
    np.testing.assert_allclose(outputs[f"{loader}/reconstruct/images"], model(images),
                               atol=1e-5)
    np.testing.assert_allclose(outputs[f"{loader}/decode/images"],
                               model.decode_noise(list(noises.values())), atol=1e-5)


@pytest.mark.parametrize("loader", ["tf1", "tf2"])
def test_sample_is_reproducible_by_seed(fresh, loader, model):
    outputs = fresh["outputs"]
    first = outputs[f"{loader}/sample_seed1/images"]
    assert first.shape == (6, 28, 28, 1) and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, outputs[f"{loader}/sample_seed1_again/images"])
    assert np.abs(first - outputs[f"{loader}/sample_seed2/images"]).max() > 1e-2
    np.testing.assert_allclose(first, model.sample(6, 0.9, 1), atol=1e-5)


def test_log_likelihood_agrees_with_tf_lvae_evaluation(fresh, model, images):
    outputs = fresh["outputs"]
    per_seed = np.stack([outputs[f"tf1/log_likelihood_seed{s}/log_likelihood"]
                         for s in range(IW_SEEDS)])                        # [seeds, B]
    assert per_seed.shape == (IW_SEEDS, NUM_IMAGES) and np.all(np.isfinite(per_seed))
    np.testing.assert_array_equal(per_seed[0],
                                  outputs["tf1/log_likelihood_again/log_likelihood"])
    np.testing.assert_allclose(per_seed[0], outputs["tf2/log_likelihood_seed0/log_likelihood"],
                               rtol=1e-5)
    assert np.abs(per_seed[0] - per_seed[1]).max() > 0  # seeds matter

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
def test_bad_inputs_are_refused_with_a_clear_error(fresh, case):
    served = fresh["errors"][f"tf1/{case}"]
    assert EXPECTED_ERRORS[case] in served, served[:2000]
    in_python = fresh["errors"][f"tf2/{case}"]
    assert in_python != "ACCEPTED", case


def test_evaluation_streams_a_tensor_K_like_a_python_K(model, images):
    """The serving path (tensor K, dynamic chunks) draws the same samples as the static one."""
    static = evaluation.iw_bound_per_example(model, images, 150, 64, seed=3)
    dynamic = tf.function(lambda k: evaluation.iw_bound_per_example(model, images, k, 64,
                                                                     seed=3))(tf.constant(150))
    np.testing.assert_allclose(dynamic, static, rtol=1e-6)
    other_seed = evaluation.iw_bound_per_example(model, images, 150, 64, seed=4)
    assert np.abs(other_seed - static).max() > 0


def test_grpc_requests_validate_against_the_exported_signatures(exported, images, noises):
    client = _load_grpc_client()
    signatures = _signature_defs(exported)
    requests = [
        client.encode_request(images), client.reconstruct_request(images),
        client.sample_request(4, seed=1, temperature=0.5), client.decode_request(noises),
        client.log_likelihood_request(images, num_samples=100, seed=2),
    ]
    for request in requests:
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
        samples = client.predict(address, client.sample_request(3, seed=5, temperature=1.0))
        means = client.predict(address, client.encode_request(images[:2]))
    finally:
        server.stop(None)
    np.testing.assert_allclose(samples["images"], model.sample(3, 1.0, 5), atol=1e-5)
    np.testing.assert_allclose(means["z1_mean"], model.encode(images[:2])[0][0], atol=1e-5)


def test_example_rest_requests_match_the_signatures(exported):
    """export/requests/*.json use the columnar format; decode's is for the paper's 5 layers."""
    signatures = _signature_defs(exported)
    paper = ModelSpec()
    for name in serving.SIGNATURES:
        body = json.loads((EXPORT_DOCS / "requests" / f"{name}.json").read_text())
        assert body["signature_name"] == name and set(body) == {"signature_name", "inputs"}
        inputs = body["inputs"]
        if name == "decode":
            assert {k: np.shape(v) for k, v in inputs.items()} == {
                f"z{i}_noise": (1, size) for i, size in enumerate(paper.latent_sizes, 1)}
            continue
        assert set(inputs) == set(signatures[name].inputs)
        for key, value in inputs.items():
            expected = [d.size for d in signatures[name].inputs[key].tensor_shape.dim]
            shape = list(np.shape(value))
            assert len(shape) == len(expected) and all(
                e in (-1, s) for e, s in zip(expected, shape)), (name, key)
        if "images" in inputs:
            pixels = np.asarray(inputs["images"])
            assert set(np.unique(pixels)) <= {0.0, 1.0}


def test_models_config_and_readme_agree(exported):
    config = text_format.Parse((EXPORT_DOCS / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "lvae" and model.base_path == "/models/lvae"
    assert model.model_platform == "tensorflow"
    readme = (EXPORT_DOCS / "README.md").read_text()
    assert "docker run" in readme and "tensorflow/serving" in readme
    assert "python -m tf_lvae.export" in readme
    for name in serving.SIGNATURES:
        assert f'"signature_name": "{name}"' in readme or f"requests/{name}.json" in readme


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


def test_an_existing_version_is_never_overwritten(model, exported):
    before = sorted(p.name for p in exported.parent.iterdir())
    with pytest.raises(versioned_export.ExportError, match="already exists"):
        versioned_export.export_model(model, exported.parent, version=1)
    with pytest.raises(ValueError, match="positive"):
        versioned_export.export_model(model, exported.parent, version=0)
    assert sorted(p.name for p in exported.parent.iterdir()) == before
    assert versioned_export.next_version(exported.parent) == 2


def test_a_crash_before_the_rename_leaves_no_version(model, tmp_path, monkeypatch):
    export_dir = tmp_path / "exports"
    export_dir.mkdir()
    (export_dir / "3").mkdir()  # an earlier version

    def crash(staging, final):
        assert (Path(staging) / "saved_model.pb").is_file()  # written and checked, not moved
        raise OSError("simulated crash during the final rename")

    monkeypatch.setattr(versioned_export, "_move_into_place", crash)
    with pytest.raises(OSError, match="simulated crash"):
        versioned_export.export_model(model, export_dir, limits=LIMITS)
    assert sorted(p.name for p in export_dir.iterdir()) == ["3"]


def test_a_killed_export_leaves_nothing_tf_serving_would_load(model_dir, tmp_path):
    """The process dies (no cleanup runs) right after the SavedModel files are written."""
    export_dir = tmp_path / "exports"
    script = textwrap.dedent(f"""
        import os
        from keras.src.backend.tensorflow.export import TFExportArchive
        from tf_lvae import versioned_export
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
