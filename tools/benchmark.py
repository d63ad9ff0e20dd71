"""Throughput benchmark of tf_lvae on the paper's 5-layer MNIST model, optionally beside the
PyTorch yardstick (shared/peer/torch_bench.py) in the same invocation.

Measures, for the LVAE and the bottom-up VAE (batch 256, 784 binary pixels):
  * train: examples/s of the Keras train step (forward, backward, Adam; what model.fit runs),
    median over timed windows after warm-up, on in-memory batches (pure step time);
  * epoch: one epoch of the real input pipeline (`tf_lvae.data.make_dataset` over the shipped
    binarized MNIST, dynamic binarization, shuffling) through `model.fit`, as
    `tf_lvae.training` runs it, beside steps_per_epoch x the pure step time (LVAE only);
  * eval: seconds per test example of L_K (K=5000) with `evaluation.iw_bound_per_example`,
    median over examples, and the peak resident memory of `evaluate_images` on a batch of
    examples with the production batch/chunk settings (peak memory does not grow with the
    number of examples: L_K is streamed);
  * analytic matmul FLOPs per example (2 * fan_in * fan_out per row of every Dense; training =
    3 x forward, the peer's convention) and the GFLOP/s that gives; a TF GEMM probe
    (256x512x512) before and after, since these shared machines drift.

Our runs happen in a worker subprocess (thread settings are fixed before TensorFlow starts).
With --peer the PyTorch benchmark runs in a copy of shared/peer; each round (--rounds)
alternates by phase: peer train, our train (and epoch), peer eval, our eval, so the two runs
a ratio compares are back to back. Our/peer ratios are printed per round and as medians.

    python tools/benchmark.py                                   # ours only, ~3 min
    python tools/benchmark.py --peer --torch_python /tmp/torchenv/bin/python --rounds 2
    python tools/benchmark.py --skip_eval --models lvae --windows 6      # quick training check
Results: JSON on stdout's last line and in --out (default benchmark_results.json).
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEER_DIR = ROOT / "shared" / "peer"
if not PEER_DIR.exists():
    PEER_DIR = ROOT.parent / "shared" / "peer"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="intra/inter-op threads (peer too)")
    p.add_argument("--models", default="lvae,vae")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps before timing")
    p.add_argument("--windows", type=int, default=12, help="timed windows (median reported)")
    p.add_argument("--steps", type=int, default=15, help="train steps per window")
    p.add_argument("--train_jit", choices=["xla", "graph"], default="xla",
                   help="xla: model.compile(jit_compile=True), as tf_lvae.training does")
    p.add_argument("--eval_jit", choices=["auto", "xla", "graph"], default="auto",
                   help="L_K function: auto = XLA on GPU, TF graph on CPU (evaluate_images)")
    p.add_argument("--K", type=int, default=5000)
    p.add_argument("--eval_examples", type=int, default=10, help="timed examples per model")
    p.add_argument("--eval_batch", type=int, default=1, help="examples per L_K call (timing)")
    p.add_argument("--chunk", type=int, default=1000, help="importance samples per chunk")
    p.add_argument("--memory_examples", type=int, default=60,
                   help="examples of the evaluate_images peak-memory run (0 skips it)")
    p.add_argument("--memory_iw_batch", type=int, default=20,
                   help="iw_batch_size of the memory run (configs/base.py default)")
    p.add_argument("--memory_chunk", type=int, default=1000,
                   help="chunk_size of the memory run (configs/base.py default)")
    p.add_argument("--steps_per_execution", type=int, default=None,
                   help="train.steps_per_execution: train steps per call (the largest divisor "
                        "of binarized MNIST's 195 steps per epoch not above it is used); "
                        "default: configs/base.py's, as training runs")
    p.add_argument("--precision", default="float32",
                   choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   help="train.precision: 16-bit MLPs, float32 heads (for GPUs)")
    p.add_argument("--skip_train", action="store_true")
    p.add_argument("--skip_eval", action="store_true")
    p.add_argument("--skip_epoch", action="store_true")
    p.add_argument("--epochs", type=int, default=5,
                   help="timed epochs (after one warm-up); their median is reported")
    p.add_argument("--peer", action="store_true", help="also run shared/peer/torch_bench.py")
    p.add_argument("--peer_compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--torch_python", default="/tmp/torchenv/bin/python")
    p.add_argument("--rounds", type=int, default=2, help="peer/ours alternations with --peer")
    p.add_argument("--out", default="benchmark_results.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory_worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------ analytic FLOPs
def dense_shapes(spec, inference):
    """(fan_in, fan_out) of every Dense of one forward pass, split by where it runs.

    Returns dict(per_example=[...], per_sample=[...]): the LVAE's upward pass (and the VAE's
    q(z_1|x)) runs once per example; the rest once per posterior sample.
    """
    latent, hidden, x_dim = spec.latent_sizes, spec.hidden_sizes, spec.num_pixels
    n = len(latent)
    up_in = [x_dim] + (list(hidden[:-1]) if inference == "lvae" else list(latent[:-1]))
    up = [[(up_in[i], hidden[i]), (hidden[i], hidden[i]), (hidden[i], 2 * latent[i])]
          for i in range(n)]
    down = [[(latent[i + 1], hidden[i + 1]), (hidden[i + 1], hidden[i + 1]),
             (hidden[i + 1], 2 * latent[i])] for i in range(n - 1)]
    decoder = [(latent[0], hidden[0]), (hidden[0], hidden[0]), (hidden[0], x_dim)]
    flat = lambda groups: [s for g in groups for s in g]  # noqa: E731
    if inference == "lvae":
        return dict(per_example=flat(up), per_sample=flat(down) + decoder)
    return dict(per_example=up[0], per_sample=flat(up[1:]) + flat(down) + decoder)


def flops(spec, inference, num_samples):
    shapes = dense_shapes(spec, inference)
    per = lambda s: sum(2 * a * b for a, b in s)  # noqa: E731
    forward = per(shapes["per_example"]) + per(shapes["per_sample"])
    return dict(forward_per_example=forward, train_per_example=3 * forward,
                lk_per_example=per(shapes["per_example"]) + num_samples * per(shapes["per_sample"]))


# ---------------------------------------------------------------------------- the worker
def _peak_rss_reset():
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _stats(values):
    return dict(median=statistics.median(values), min=min(values), max=max(values),
                all=[round(v, 4) for v in values])


def run_worker(args):
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    from tf_lvae import data
    from tf_lvae.evaluation import likelihood as evaluation
    from tf_lvae.training import fault_tolerance
    from tf_lvae.training import loop as training
    from tf_lvae.training.train_step import build_model
    from tf_lvae.model.spec import ModelSpec

    def gemm_probe(seconds=1.0):
        a, b = tf.random.normal([256, 512]), tf.random.normal([512, 512])
        step = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
        step(a, b).numpy()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(a, b).numpy()
            count += 1
        return 2.0 * 256 * 512 * 512 * count / (time.perf_counter() - start) / 1e9

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    out = dict(config=dict(vars(args), tensorflow=tf.__version__, keras=keras.__version__,
                           device=device, time=time.strftime("%Y-%m-%d %H:%M:%S")),
               probe_before=gemm_probe(), train=[], epoch=[], eval=[])
    rng = np.random.default_rng(1)
    pool = [(rng.random((args.batch, 28, 28, 1)) < 0.5).astype(np.float32) for _ in range(8)]

    mnist_steps = 50_000 // args.batch   # binarized MNIST's training split
    if args.steps_per_execution is None:
        from tf_lvae.configs import base
        args.steps_per_execution = base.base_config().train.steps_per_execution
    steps_per_call = fault_tolerance.steps_per_call(args.steps_per_execution, mnist_steps)
    calls = max(1, args.steps // steps_per_call)   # per timed window

    def new_model(inference, jit):
        keras.utils.set_random_seed(0)
        model = build_model(ModelSpec(inference=inference), args.precision)
        # as tf_lvae.training: seeded (stateless, resumable) posterior noise, its optimizer
        model.configure_objective(noise_seed=0)
        model.compile(optimizer=training.make_optimizer(1e-3, 1e-4, args.precision),
                      jit_compile=jit)
        model.steps_per_execution = steps_per_call
        return model

    for inference in args.models.split(","):
        spec = ModelSpec(inference=inference)
        f = flops(spec, inference, args.K)
        if not args.skip_train:
            model = new_model(inference, args.train_jit == "xla")
            iterator = iter(tf.data.Dataset.from_tensor_slices(np.stack(pool)).repeat())
            model.make_train_function()
            _peak_rss_reset()
            start = time.perf_counter()
            for _ in range(max(1, args.warmup // steps_per_call)):
                logs = model.train_function(iterator)
            float(logs["loss"])
            warmup_s = time.perf_counter() - start
            rates = []
            for _ in range(args.windows):
                start = time.perf_counter()
                for _ in range(calls):   # each call runs steps_per_call train steps
                    logs = model.train_function(iterator)
                float(logs["loss"])  # waits for the last step
                rates.append(calls * steps_per_call * args.batch
                             / (time.perf_counter() - start))
            median = statistics.median(rates)
            out["train"].append(dict(
                model=inference, jit=args.train_jit, examples_per_s=_stats(rates),
                step_ms_median=1e3 * args.batch / median, warmup_s=warmup_s,
                train_flops_per_example=f["train_per_example"],
                gflops_median=median * f["train_per_example"] / 1e9,
                peak_rss_mb=_rss_mb("VmHWM"), final_loss=float(logs["loss"])))
            print(f"[ours] TRAIN {inference}: {median:.0f} ex/s "
                  f"(min {min(rates):.0f}, max {max(rates):.0f}), "
                  f"{median * f['train_per_example'] / 1e9:.1f} GFLOP/s", file=sys.stderr,
                  flush=True)
            if inference == "lvae" and not args.skip_epoch:
                out["epoch"].append(_epoch(args, model, data, tf, median))
        if not args.skip_eval:
            out["eval"].append(_eval(args, inference, new_model, evaluation, tf, np, f))
    out["probe_after"] = gemm_probe()
    return out


def _epoch(args, model, data, tf, step_rate):
    """Epoch time of the training loop over the real pipeline vs steps x pure step time.

    Runs `fault_tolerance.fit_resumable` as `tf_lvae.training` does: one model.fit over the
    epochs' datasets (a flat_map), each epoch timed from its first to its last batch.
    """
    import keras
    from tf_lvae.training import fault_tolerance
    images = data.load_arrays("binarized_mnist", "train")[0]
    spec = data.get_spec("binarized_mnist")
    with tf.device("/CPU:0"):
        tensor = tf.convert_to_tensor(images, tf.float32)
    steps = len(images) // args.batch
    dataset = lambda e: data.make_dataset(tensor, spec, args.batch, shuffle=True,  # noqa: E731
                                          seed=0, epoch=e, drop_remainder=True)
    start = time.perf_counter()
    count = sum(1 for _ in dataset(0))
    pipeline_rate = count * args.batch / (time.perf_counter() - start)

    class EpochTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_s, self.step_ms = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.ends = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_s.append(self.ends[-1] - self.ends[0])
            # callbacks see call ends: a call runs model.steps_per_execution steps
            self.step_ms.append(1e3 * statistics.median(
                b - a for a, b in zip(self.ends[1:-1], self.ends[2:]))
                / model.steps_per_execution)

    timer = EpochTimes()
    # the first epoch builds fit's machinery (and recompiles for the dataset's input spec)
    fault_tolerance.fit_resumable(model, dataset, None, args.epochs + 1, steps, verbose=0,
                                  callbacks=[timer])
    epoch_s = statistics.median(timer.epoch_s[1:])
    pure_s = steps * args.batch / step_rate
    result = dict(model="lvae", steps_per_epoch=steps, epoch_s=_stats(timer.epoch_s[1:]),
                  warmup_epoch_s=timer.epoch_s[0],
                  step_ms_in_fit=[round(v, 2) for v in timer.step_ms],
                  pure_step_ms=1e3 * args.batch / step_rate,
                  pure_step_epoch_s=pure_s, overhead=epoch_s / pure_s - 1.0,
                  pipeline_alone_examples_per_s=pipeline_rate,
                  fit_examples_per_s=steps * args.batch / epoch_s)
    print(f"[ours] EPOCH lvae: fit {epoch_s:.2f} s vs pure steps {pure_s:.2f} s "
          f"({100 * result['overhead']:+.1f}%); median step in fit (per epoch, warm-up first) "
          f"{result['step_ms_in_fit']} ms vs pure "
          f"{result['pure_step_ms']:.1f} ms; pipeline alone {pipeline_rate:.0f} ex/s",
          file=sys.stderr, flush=True)
    return result


def _eval(args, inference, new_model, evaluation, tf, np, f):
    model = new_model(inference, False)
    jit = {"auto": "auto", "xla": True, "graph": False}[args.eval_jit]
    iw_bound = evaluation.iw_bound_function(model, args.K, args.chunk, jit)
    bound = lambda images: iw_bound(images, tf.constant(0))  # noqa: E731 (seeded, as evaluate)
    rng = np.random.default_rng(2)
    n = args.eval_examples * args.eval_batch
    images = (rng.random((n + args.eval_batch, 28, 28, 1)) < 0.5).astype(np.float32)
    start = time.perf_counter()
    bound(tf.constant(images[:args.eval_batch])).numpy()
    first_s = time.perf_counter() - start
    times, values = [], []
    for s in range(args.eval_batch, n + args.eval_batch, args.eval_batch):
        start = time.perf_counter()
        values.extend(bound(tf.constant(images[s:s + args.eval_batch])).numpy().tolist())
        times.append((time.perf_counter() - start) / args.eval_batch)
    median = statistics.median(times)
    result = dict(model=inference, K=args.K, chunk=args.chunk, eval_batch=args.eval_batch,
                  jit=args.eval_jit, s_per_example=_stats(times), first_call_s=first_s,
                  lk_flops_per_example=f["lk_per_example"],
                  gflops_median=f["lk_per_example"] / median / 1e9,
                  mean_lk_random_init=float(np.mean(values)))
    print(f"[ours] EVAL {inference} L_{args.K}: {1e3 * median:.1f} ms/example "
          f"(min {1e3 * min(times):.1f}), {result['gflops_median']:.1f} GFLOP/s",
          file=sys.stderr, flush=True)
    return result


def run_memory_worker(args):
    """Peak RSS of a fresh process running evaluate_images (what a full L_K run peaks at).

    L_K is streamed in iw_batch_size x chunk_size rows, so the peak is reached within the
    first batches and does not grow with the number of examples.
    """
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    from tf_lvae.evaluation import likelihood as evaluation
    from tf_lvae.training.train_step import build_model
    from tf_lvae.model.spec import ModelSpec
    out = []
    for inference in args.models.split(","):
        keras.utils.set_random_seed(0)
        model = build_model(ModelSpec(inference=inference))
        images = (np.random.default_rng(3).random((args.memory_examples, 28, 28, 1)) < 0.5
                  ).astype(np.float32)
        base = _rss_mb("VmRSS")
        start = time.perf_counter()
        evaluation.evaluate_images(
            model, images, iw_samples=args.K, iw_batch_size=args.memory_iw_batch,
            chunk_size=args.memory_chunk,
            jit_compile={"auto": "auto", "xla": True, "graph": False}[args.eval_jit], verbose=0)
        out.append(dict(model=inference, examples=len(images), K=args.K,
                        iw_batch_size=args.memory_iw_batch, chunk_size=args.memory_chunk,
                        s_per_example=(time.perf_counter() - start) / len(images),
                        rss_before_mb=base, process_peak_rss_mb=_rss_mb("VmHWM")))
        print(f"[ours] MEMORY {inference}: evaluate_images(iw_batch_size="
              f"{args.memory_iw_batch}, chunk_size={args.memory_chunk}) process peak RSS "
              f"{out[-1]['process_peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------------- orchestration
def run_ours(args, argv, memory=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", *argv]
    cmd += ["--memory_worker"] if memory else []
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_peer(args, workdir, skip_train=False, skip_eval=False):
    cmd = [args.torch_python, "torch_bench.py", "--threads", str(args.threads),
           "--batch", str(args.batch), "--warmup", str(args.warmup), "--windows",
           str(args.windows), "--steps", str(args.steps), "--models", args.models,
           "--K", str(args.K), "--eval-examples", str(args.eval_examples), "--chunks",
           str(args.chunk), "--tag", "tf_lvae_benchmark"]
    cmd += ["--compile"] if args.peer_compile else []
    cmd += ["--skip-train"] if args.skip_train or skip_train else []
    cmd += ["--skip-eval"] if args.skip_eval or skip_eval else []
    subprocess.run(cmd, cwd=workdir, check=True, stdout=sys.stderr)
    with open(os.path.join(workdir, "results", "torch_bench_tf_lvae_benchmark.json")) as f:
        return json.load(f)


def _round_by_phase(args, workdir, worker_argv, round_index):
    """One round as peer train, our train (and epoch), peer eval, our eval: each pair of
    measurements a ratio compares runs back to back, minutes closer than whole runs would."""
    print(f"--- round {round_index + 1}: peer train", file=sys.stderr, flush=True)
    peer = run_peer(args, workdir, skip_eval=True)
    print(f"--- round {round_index + 1}: ours train", file=sys.stderr, flush=True)
    ours = run_ours(args, worker_argv + ["--skip_eval"])
    print(f"--- round {round_index + 1}: peer eval", file=sys.stderr, flush=True)
    peer["eval"] = run_peer(args, workdir, skip_train=True).get("eval", [])
    print(f"--- round {round_index + 1}: ours eval", file=sys.stderr, flush=True)
    ours_eval = run_ours(args, worker_argv + ["--skip_train", "--skip_epoch"])
    ours["eval"] = ours_eval["eval"]
    ours["eval_probes"] = [ours_eval["probe_before"], ours_eval["probe_after"]]
    return peer, ours


def ratios(ours, peer):
    """our/peer speed ratios (> 1: we are faster) for the pairs one round measured."""
    r = {}
    for t in ours["train"]:
        for p in peer.get("train", []):
            if p["model"] == t["model"]:
                key = f"train_{t['model']}_vs_{'compiled' if p['compiled'] else 'eager'}"
                r[key] = t["examples_per_s"]["median"] / p["examples_per_s"]["median"]
    for e in ours["eval"]:
        for p in peer.get("eval", []):
            if p["model"] == e["model"]:
                for name, c in p["chunks"].items():
                    r[f"eval_{e['model']}_vs_chunk_{name}"] = (
                        c["s_per_example"]["median"] / e["s_per_example"]["median"])
    return r


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_memory_worker(args) if args.memory_worker else run_worker(args)),
              flush=True)
        return
    worker_argv = [a for a in argv if a not in ("--peer",)]
    result = dict(rounds=[])
    if args.peer and not os.path.exists(args.torch_python):
        sys.exit(f"--peer needs torch: {args.torch_python} does not exist (python3 -m venv "
                 f"/tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy)")
    workdir = tempfile.mkdtemp(prefix="peer_") if args.peer else None
    if workdir:
        shutil.copytree(PEER_DIR, workdir, dirs_exist_ok=True)
        for path in pathlib.Path(workdir).rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)  # shared/ is read-only; results/ is written
    for round_index in range(args.rounds if args.peer else 1):
        entry = {}
        if args.peer and not (args.skip_train or args.skip_eval):
            entry["peer"], entry["ours"] = _round_by_phase(args, workdir, worker_argv,
                                                           round_index)
        else:
            if args.peer:
                print(f"--- round {round_index + 1}: peer", file=sys.stderr, flush=True)
                entry["peer"] = run_peer(args, workdir)
            print(f"--- round {round_index + 1}: ours", file=sys.stderr, flush=True)
            entry["ours"] = run_ours(args, worker_argv)
        if args.peer:
            entry["ratios"] = ratios(entry["ours"], entry["peer"])
            for key, value in entry["ratios"].items():
                print(f"RATIO round {round_index + 1} {key}: {value:.2f}x", file=sys.stderr)
        result["rounds"].append(entry)
    if args.peer:
        keys = result["rounds"][0]["ratios"].keys()
        result["ratio_medians"] = {k: statistics.median(r["ratios"][k] for r in result["rounds"])
                                   for k in keys}
        for key, value in result["ratio_medians"].items():
            print(f"RATIO median {key}: {value:.2f}x (ours/peer speed)", file=sys.stderr)
    if not args.skip_eval and args.memory_examples:
        result["memory"] = run_ours(args, worker_argv, memory=True)
    result["flops"] = {m: flops(_spec(), m, args.K) for m in args.models.split(",")}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result.get("ratio_medians", {})))


def _spec():
    sys.path.insert(0, str(ROOT))
    from tf_lvae.model.spec import ModelSpec
    return ModelSpec()


if __name__ == "__main__":
    main()
