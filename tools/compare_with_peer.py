"""Train the same 5-layer model with tf_lvae and with the independent PyTorch peer; compare.

    python tools/compare_with_peer.py --data_dir=../shared/data/mnist --epochs=5 \
        --torch_python=/tmp/torchenv/bin/python --output=runs/compare.json

Both see the same MNIST arrays (dynamic binarization for training, the same once-binarized
test set), the same schedule (Adam 1e-3, batch 256, linear warm-up) and report the test L_1 and
L_K. Ours runs through the real tf_lvae.train / tf_lvae.evaluate library functions.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def _ours(args, model):
    from tf_lvae.training import loop as training
    from tf_lvae.configs import mnist
    from tf_lvae.evaluation.trained import evaluate_model_dir
    config = mnist.get_config()
    config.data.data_dir = args.data_dir
    config.model.inference = model
    config.train.epochs = args.epochs
    config.train.warmup_epochs = args.warmup_epochs
    config.train.eval_every_epochs = 0
    config.train.verbose = 2
    model_dir = os.path.join(args.work_dir, f"ours_{model}")
    training.train(config, model_dir)
    result = evaluate_model_dir(model_dir, iw_samples=args.iw_samples, verbose=0)
    return dict(implementation="tf_lvae", model=model, epochs=args.epochs,
                elbo=result["elbo"], iw_bound=result["iw_bound"],
                iw_samples=result["iw_samples"], num_examples=result["num_examples"])


def _peer(args, model, npz_path):
    command = [args.torch_python, str(HERE / "peer_train.py"), f"--npz={npz_path}",
               f"--peer_dir={args.peer_dir}", f"--model={model}", f"--epochs={args.epochs}",
               f"--warmup_epochs={args.warmup_epochs}", f"--iw_samples={args.iw_samples}"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="folder with the MNIST idx files")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup_epochs", type=int, default=2)
    parser.add_argument("--iw_samples", type=int, default=1000)
    parser.add_argument("--models", default="lvae,vae")
    parser.add_argument("--torch_python", default=None, help="a Python with torch (skip if unset)")
    parser.add_argument("--peer_dir", default=str(HERE.parents[1] / "shared" / "peer"))
    parser.add_argument("--work_dir", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="compare_")
    os.makedirs(args.work_dir, exist_ok=True)

    from tf_lvae import data
    train = data.load_arrays("mnist", "train+validation", data_dir=args.data_dir)[0]
    test = data.load_arrays("mnist", "test", data_dir=args.data_dir)[0]
    npz_path = os.path.join(args.work_dir, "mnist.npz")
    np.savez(npz_path, train=train.reshape(len(train), -1), test=test.reshape(len(test), -1))

    rows = []
    for model in args.models.split(","):
        rows.append(_ours(args, model))
        print(json.dumps(rows[-1]), flush=True)
        if args.torch_python:
            rows.append(_peer(args, model, npz_path))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| implementation | model | epochs | test L_1 | test L_{args.iw_samples} |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['implementation']} | {row['model']} | {row['epochs']} | "
              f"{row['elbo']:.2f} | {row['iw_bound']:.2f} |")
    if args.output:
        pathlib.Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(args.output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
