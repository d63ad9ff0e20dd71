"""gRPC client for a tf_lvae model served by TF Serving (signatures of `python -m tf_lvae.export`).

    pip install tensorflow-serving-api      # brings grpcio and tensorflow
    python export/grpc_client.py --server=localhost:8500 sample --num_samples=8 --seed=0 \
        --output=samples.npy
    python export/grpc_client.py encode --images=digits.npy       # float32 [B, 28, 28, 1] in [0, 1]
    python export/grpc_client.py reconstruct --images=digits.npy --output=reconstructions.npy
    python export/grpc_client.py log_likelihood --images=digits.npy --num_samples=1000
    python export/grpc_client.py decode --noise=noise.npz          # arrays z1_noise ... zL_noise

Prints the shape of every output (and the log-likelihoods); --output saves them (.npy for one
output, .npz for several). The functions below build the same requests for use in your code:

    request = sample_request(num_samples=8, seed=0, temperature=1.0, model_name="lvae")
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


def encode_request(images, **kwargs):
    """images [B, h, w, c] in [0, 1] -> outputs z1_mean, z1_stddev, ..., zL_stddev."""
    return make_request("encode", dict(images=np.asarray(images, np.float32)), **kwargs)


def reconstruct_request(images, **kwargs):
    """images [B, h, w, c] in [0, 1] -> output images [B, h, w, c]."""
    return make_request("reconstruct", dict(images=np.asarray(images, np.float32)), **kwargs)


def sample_request(num_samples, seed=0, temperature=1.0, **kwargs):
    """-> output images [num_samples, h, w, c]; the same seed gives the same images."""
    return make_request("sample", dict(num_samples=np.int32(num_samples), seed=np.int32(seed),
                                       temperature=np.float32(temperature)), **kwargs)


def decode_request(noises, **kwargs):
    """noises: {"z1_noise": [B, D_1], ..., "zL_noise": [B, D_L]} -> output images [B, h, w, c]."""
    return make_request("decode", {name: np.asarray(value, np.float32)
                                   for name, value in noises.items()}, **kwargs)


def log_likelihood_request(images, num_samples=1000, seed=0, **kwargs):
    """Binary images [B, h, w, c] -> output log_likelihood [B] (L_K in nats, K=num_samples)."""
    return make_request("log_likelihood", dict(images=np.asarray(images, np.float32),
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
    for name in ("encode", "reconstruct", "log_likelihood"):
        command = commands.add_parser(name)
        command.add_argument("--images", required=True, help=".npy of float32 [B, h, w, c]")
        if name == "log_likelihood":
            command.add_argument("--num_samples", type=int, default=1000)
            command.add_argument("--seed", type=int, default=0)
    command = commands.add_parser("sample")
    command.add_argument("--num_samples", type=int, default=8)
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--temperature", type=float, default=1.0)
    command = commands.add_parser("decode")
    command.add_argument("--noise", required=True, help=".npz with z1_noise ... zL_noise")
    return parser.parse_args(argv)


def _request(args):
    target = dict(model_name=args.model, version=args.version)
    if args.signature == "sample":
        return sample_request(args.num_samples, args.seed, args.temperature, **target)
    if args.signature == "decode":
        return decode_request(dict(np.load(args.noise)), **target)
    images = np.load(args.images)
    if args.signature == "log_likelihood":
        return log_likelihood_request(images, args.num_samples, args.seed, **target)
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
