"""Train and evaluate the independent PyTorch LVAE (shared/peer) on arrays we hand it.

Run by tools/compare_with_peer.py in a Python that has torch; imports the peer's module from
--peer_dir at run time (none of its code lives here). Same protocol as ours: Adam(1e-3),
batch 256, beta linear 0 -> 1 over the warm-up epochs, fresh Bernoulli pixels every epoch,
test images binarized once; prints one JSON line.
"""
import argparse
import json
import sys
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--npz", required=True, help="train (intensities) and test (0/1) [N, 784]")
    parser.add_argument("--peer_dir", required=True)
    parser.add_argument("--model", choices=["lvae", "vae"], default="lvae")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup_epochs", type=int, default=2)
    parser.add_argument("--iw_samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    sys.path.insert(0, args.peer_dir)
    import torch_lvae  # the peer's module

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arrays = np.load(args.npz)
    train = torch.from_numpy(arrays["train"].astype(np.float32))
    test = torch.from_numpy(arrays["test"].astype(np.float32))
    model = torch_lvae.LVAE(ladder=args.model == "lvae")
    optimizer = torch_lvae.make_optimizer(model, lr=1e-3)
    steps_per_epoch = len(train) // 256
    warmup_steps = args.warmup_epochs * steps_per_epoch
    step, start = 0, time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train))
        for i in range(steps_per_epoch):
            batch = torch.bernoulli(train[order[i * 256:(i + 1) * 256]])
            beta = min(1.0, step / warmup_steps) if warmup_steps else 1.0
            torch_lvae.train_step(model, optimizer, batch, beta)
            step += 1
        print(f"peer {args.model} epoch {epoch + 1}/{args.epochs}", file=sys.stderr)
    train_seconds = time.time() - start
    model.eval()
    with torch.no_grad():
        elbo = sum(float(model(test[i:i + 1000])["elbo"]) * len(test[i:i + 1000])
                   for i in range(0, len(test), 1000)) / len(test)
        iw = sum(float(model.iw_bound(test[i:i + 20], args.iw_samples).sum())
                 for i in range(0, len(test), 20)) / len(test)
    print(json.dumps(dict(implementation="peer (PyTorch)", model=args.model, epochs=args.epochs,
                          elbo=elbo, iw_bound=iw, iw_samples=args.iw_samples,
                          num_examples=len(test), train_seconds=round(train_seconds, 1))))


if __name__ == "__main__":
    main()
