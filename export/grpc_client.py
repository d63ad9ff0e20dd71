"""gRPC client for a tf_lvae model served by TF Serving (signatures of `python -m tf_lvae.export`).

    pip install tensorflow-serving-api      # brings grpcio and tensorflow
    python export/grpc_client.py --server=localhost:8500 sample --num_samples=8 --seed=0 \
        --output=samples.npy                                      # image r from seed 0 + r
    python export/grpc_client.py sample_per_layer --num_samples=8 --temperatures=1,1,1,0.5,0.5
    python export/grpc_client.py encode --images=digits.npy       # float32 [B, 28, 28, 1] in [0, 1]
    python export/grpc_client.py reconstruct --images=digits.npy --output=reconstructions.npy
    python export/grpc_client.py keep_top --images=digits.npy --layer=3 --seed=0
    python export/grpc_client.py interpolate --images_a=a.npy --images_b=b.npy --layer=5 \
        --steps=8                                 # the first image of each, 8 weights in [0, 1]
    python export/grpc_client.py log_likelihood --images=digits.npy --seed=0
    python export/grpc_client.py decode --noise=noise.npz          # arrays z1_noise ... zL_noise

Prints the shape of every output (and the log-likelihoods); --output saves them (.npy for one
output, .npz for several). The functions below build the same requests for use in your code;
they target signature version 2 (every input batched; the export's default), except the
`*_v1_request` ones, for exports written with --signature_version=1:

    request = sample_request(seeds=range(8), temperature=1.0, model_name="lvae")
    images = predict("localhost:8500", request)["images"]         # [8, 28, 28, 1]
"""
import argparse
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc


def make_request(signature_name, inputs, model_name="lvae", version=None):
    """A PredictRequest for one signature; inputs maps input names to numpy values."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _rows(value, batch_size, dtype, *trailing):
    """value (a scalar, [B] or [B, *trailing]) broadcast to [batch_size, *trailing]."""
    value = np.asarray(value, dtype)
    if value.ndim == len(trailing):
        value = value[None]
    return np.ascontiguousarray(np.broadcast_to(value, [batch_size, *trailing]))


def _images(images):
    return np.asarray(images, np.float32)


def encode_request(images, **kwargs):
    """images [B, h, w, c] in [0, 1] -> outputs z1_mean, z1_stddev, ..., zL_stddev."""
    return make_request("encode", dict(images=_images(images)), **kwargs)


def reconstruct_request(images, **kwargs):
    """images [B, h, w, c] in [0, 1] -> output images [B, h, w, c]."""
    return make_request("reconstruct", dict(images=_images(images)), **kwargs)


def sample_request(seeds, temperature=1.0, **kwargs):
    """One image per seed (int [B]) -> output images [B, h, w, c]; temperature: > 0, one or
    one per row. The same seed gives the same image."""
    seeds = np.asarray(seeds, np.int32).reshape([-1])
    return make_request("sample", dict(seed=seeds,
                                       temperature=_rows(temperature, len(seeds), np.float32)),
                        **kwargs)


def sample_per_layer_request(seeds, temperatures, **kwargs):
    """One image per seed; temperatures [L] (z_1 first) or [B, L], each > 0."""
    seeds = np.asarray(seeds, np.int32).reshape([-1])
    temperatures = np.asarray(temperatures, np.float32)
    temperatures = _rows(temperatures, len(seeds), np.float32, temperatures.shape[-1])
    return make_request("sample_per_layer", dict(seed=seeds, temperatures=temperatures),
                        **kwargs)


def keep_top_request(images, layer, seeds=0, temperature=1.0, **kwargs):
    """images [B, h, w, c]: keep layers layer..L (1 = z_1) of each image's posterior, redraw
    the layers below with seeds (one or [B]) -> output images [B, h, w, c]."""
    images = _images(images)
    batch_size = len(images)
    return make_request("keep_top", dict(
        images=images, layer=_rows(layer, batch_size, np.int32),
        seed=_rows(seeds, batch_size, np.int32),
        temperature=_rows(temperature, batch_size, np.float32)), **kwargs)


def interpolate_request(images_a, images_b, layer, weights, **kwargs):
    """Rows of images_a, images_b [B, h, w, c] with layer (1..L) and weights in [0, 1] (one or
    [B] each) -> output images [B, h, w, c]: layer's posterior mean moved from a's to b's."""
    images_a, images_b = _images(images_a), _images(images_b)
    batch_size = len(images_a)
    return make_request("interpolate", dict(
        images_a=images_a, images_b=images_b, layer=_rows(layer, batch_size, np.int32),
        weight=_rows(weights, batch_size, np.float32)), **kwargs)


def decode_request(noises, **kwargs):
    """noises: {"z1_noise": [B, D_1], ..., "zL_noise": [B, D_L]} -> output images [B, h, w, c]."""
    return make_request("decode", {name: np.asarray(value, np.float32)
                                   for name, value in noises.items()}, **kwargs)


def log_likelihood_request(images, seeds=0, **kwargs):
    """Binary images [B, h, w, c] -> output log_likelihood [B] (L_K in nats, K fixed at
    export); seeds: one or [B], row r drawn from seeds[r] alone."""
    images = _images(images)
    return make_request("log_likelihood", dict(images=images,
                                               seed=_rows(seeds, len(images), np.int32)),
                        **kwargs)


def sample_v1_request(num_samples, seed=0, temperature=1.0, **kwargs):
    """Signature version 1: -> output images [num_samples, h, w, c]."""
    return make_request("sample", dict(num_samples=np.int32(num_samples), seed=np.int32(seed),
                                       temperature=np.float32(temperature)), **kwargs)


def log_likelihood_v1_request(images, num_samples=1000, seed=0, **kwargs):
    """Signature version 1: binary images [B, h, w, c] -> log_likelihood [B] (K=num_samples)."""
    return make_request("log_likelihood", dict(images=_images(images),
                                               num_samples=np.int32(num_samples),
                                               seed=np.int32(seed)), **kwargs)


def predict(server, request, timeout=60.0):
    """Send a PredictRequest to TF Serving at host:port; returns {output name: numpy array}."""
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="localhost:8500", help="TF Serving gRPC host:port")
    parser.add_argument("--model", default="lvae", help="model name in TF Serving's config")
    parser.add_argument("--version", type=int, default=None, help="default: the newest")
    parser.add_argument("--output", default=None, help="save the outputs (.npy / .npz)")
    commands = parser.add_subparsers(dest="signature", required=True)
    for name in ("encode", "reconstruct", "log_likelihood", "keep_top"):
        command = commands.add_parser(name)
        command.add_argument("--images", required=True, help=".npy of float32 [B, h, w, c]")
        if name in ("log_likelihood", "keep_top"):
            command.add_argument("--seed", type=int, default=0)
        if name == "keep_top":
            command.add_argument("--layer", type=int, required=True, help="1 = z_1")
            command.add_argument("--temperature", type=float, default=1.0)
    for name in ("sample", "sample_per_layer"):
        command = commands.add_parser(name)
        command.add_argument("--num_samples", type=int, default=8)
        command.add_argument("--seed", type=int, default=0, help="image r uses seed + r")
        if name == "sample":
            command.add_argument("--temperature", type=float, default=1.0)
        else:
            command.add_argument("--temperatures", required=True,
                                 help="comma-separated, one per layer, z_1 first")
    command = commands.add_parser("interpolate")
    command.add_argument("--images_a", required=True, help=".npy; its first image is used")
    command.add_argument("--images_b", required=True, help=".npy; its first image is used")
    command.add_argument("--layer", type=int, required=True, help="1 = z_1")
    command.add_argument("--steps", type=int, default=8, help="weights 0 ... 1")
    command = commands.add_parser("decode")
    command.add_argument("--noise", required=True, help=".npz with z1_noise ... zL_noise")
    return parser.parse_args(argv)


def _request(args):
    target = dict(model_name=args.model, version=args.version)
    if args.signature in ("sample", "sample_per_layer"):
        seeds = args.seed + np.arange(args.num_samples)
        if args.signature == "sample":
            return sample_request(seeds, args.temperature, **target)
        temperatures = [float(t) for t in args.temperatures.split(",")]
        return sample_per_layer_request(seeds, temperatures, **target)
    if args.signature == "decode":
        return decode_request(dict(np.load(args.noise)), **target)
    if args.signature == "interpolate":
        first_a, first_b = np.load(args.images_a)[:1], np.load(args.images_b)[:1]
        repeat = [args.steps, 1, 1, 1]
        return interpolate_request(np.tile(first_a, repeat), np.tile(first_b, repeat),
                                   args.layer, np.linspace(0.0, 1.0, args.steps), **target)
    images = np.load(args.images)
    if args.signature == "log_likelihood":
        return log_likelihood_request(images, args.seed, **target)
    if args.signature == "keep_top":
        return keep_top_request(images, args.layer, args.seed, args.temperature, **target)
    builder = encode_request if args.signature == "encode" else reconstruct_request
    return builder(images, **target)


def main(argv=None):
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    outputs = predict(args.server, _request(args))
    for name, value in sorted(outputs.items()):
        print(f"{name}: {value.dtype} {list(value.shape)}")
    if "log_likelihood" in outputs:
        print("log_likelihood (nats):", np.array2string(outputs["log_likelihood"], precision=2))
    if args.output:
        if len(outputs) == 1:
            np.save(args.output, next(iter(outputs.values())))
        else:
            np.savez(args.output, **outputs)
    return outputs


if __name__ == "__main__":
    main()
