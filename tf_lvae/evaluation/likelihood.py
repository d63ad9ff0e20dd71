"""Evaluating a trained model on a whole split: L_1, L_K (K up to 5000+), KL per layer/unit.

L_K is streamed: for each batch of examples the K importance samples are drawn in chunks of
`chunk_size` and folded into a running log-sum-exp, so memory depends on
batch_size * chunk_size, never on K. The LVAE's upward pass is computed once per example.
"""
import math
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from tf_lvae import experiment_config
from tf_lvae.model import bounds
from tf_lvae.fast import log_weights as fast_log_weights
from tf_lvae.model import noise
from tf_lvae.model.active_units import ACTIVE_UNIT_THRESHOLD


def iw_bound_per_example(model, images, num_samples, chunk_size, seed=None, fused=False):
    """L_K (eq. 6) per example [B] of images [B, h, w, c], streamed in chunks of samples.

    num_samples (K) is a Python int (static chunks, XLA-compilable: what evaluate_images
    uses) or an int32 scalar tensor (a serving input: chunks of dynamic size). With seed=None
    the samples come from the global RNG; `noise.Seeded(seed, algorithm)` (or a bare int32
    seed: the default generator) makes the bound reproducible: each chunk draws with that
    generator from a stateless seed derived from (seed, chunk index); `evaluate_images`
    passes Box-Muller (`_evaluation_noise`). fused: see `fast_log_weights.log_weights`.
    """
    x = model.flatten_images(images)
    # Per-example work (upward pass, folded BatchNorm, merge precisions) once for all chunks.
    prepared = fast_log_weights.prepare(model, x)
    state = bounds.running_logsumexp_init(tf.shape(x)[:1])
    seed = noise.seeded(seed)

    def chunk_log_weights(index, size):
        chunk_seed = None if seed is None else noise.Seeded(tf.random.stateless_uniform(
            [], seed=tf.stack([tf.cast(seed.seed, tf.int32), index]), minval=None,
            maxval=None, dtype=tf.int32), seed.algorithm)
        return fast_log_weights.log_weights(model, x, size, prepared, seed=chunk_seed,
                                            fused=fused)

    if tf.is_tensor(num_samples):
        total = tf.cast(num_samples, tf.int32)

        def dynamic_body(done, max_so_far, sum_so_far):
            size = tf.minimum(chunk_size, total - done)
            chunk = chunk_log_weights(done // chunk_size, size)
            return (done + size,) + bounds.running_logsumexp_update((max_so_far, sum_so_far),
                                                                    chunk)

        _, *state = tf.while_loop(lambda done, *_: done < total, dynamic_body,
                                  (tf.constant(0), *state))
        # running_logsumexp_result takes a Python count: divide by the tensor K here.
        return (bounds.running_logsumexp_result(tuple(state), 1)
                - tf.math.log(tf.cast(total, tf.float32)))

    full_chunks, remainder = divmod(int(num_samples), chunk_size)

    def body(i, max_so_far, sum_so_far):
        chunk = chunk_log_weights(i, chunk_size)
        return (i + 1,) + bounds.running_logsumexp_update((max_so_far, sum_so_far), chunk)

    if full_chunks:
        _, *state = tf.while_loop(lambda i, *_: i < full_chunks, body, (tf.constant(0), *state))
    if remainder:
        state = bounds.running_logsumexp_update(tuple(state),
                                                chunk_log_weights(full_chunks, remainder))
    return bounds.running_logsumexp_result(tuple(state), num_samples)


def resolve_jit_compile(jit_compile="auto"):
    """True/False as given; "auto": XLA on a GPU, a plain TF graph on CPU.

    On CPU the L_K loop is matmul-bound, and TF's graph kernels (oneDNN matmul fused with
    bias and activation) run it faster per core than XLA:CPU's dots, and scale better to 2
    threads (docs/PERFORMANCE.md).
    """
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(jit_compile)


# Compiled evaluation functions per model, so repeated evaluations (diagnostics every few
# epochs, tuning trials) trace and compile once instead of on every call.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled(model, key, build):
    functions = _COMPILED.setdefault(model, {})
    if key not in functions:
        functions[key] = build()
    return functions[key]


def _evaluation_noise(seed):
    """The posterior noise of L_1 and L_K from an int32 seed: Box-Muller, which draws the same
    numbers in a TF graph and in XLA, and faster than TF's CPU kernel (`noise`)."""
    return noise.Seeded(seed, noise.BOX_MULLER)


def iw_bound_function(model, num_samples, chunk_size, jit_compile="auto"):
    """The compiled L_K that `evaluate_images` runs: f(images [B, h, w, c], seed int32
    scalar) -> L_K per example [B]. As a TF graph (CPU) the elementwise work between the
    matmuls runs in small XLA functions (`tf_lvae.fast.log_weights`, fused=True)."""
    jit = resolve_jit_compile(jit_compile)

    def iw_bound(images, seed):
        return iw_bound_per_example(model, images, num_samples, chunk_size,
                                    seed=_evaluation_noise(seed), fused=not jit)

    return _compiled(model, ("iw", num_samples, chunk_size, jit),
                     lambda: tf.function(iw_bound, jit_compile=jit, reduce_retracing=True))


def _elbo_fn(model, jit_compile):
    """f(images, seed) -> (elbo [B], kl per unit [[B, D_i]]) with one posterior draw (L_1)."""
    jit = resolve_jit_compile(jit_compile)

    def elbo(images, seed):
        x = model.flatten_images(images)
        terms = model.evaluate_terms(x, 1, training=False, seed=_evaluation_noise(seed))
        total_kl = tf.add_n([tf.reduce_sum(kl, -1) for kl in terms["kl_per_unit"]])
        return terms["log_px"] - total_kl, terms["kl_per_unit"]

    return _compiled(model, ("elbo", jit),
                     lambda: tf.function(elbo, jit_compile=jit, reduce_retracing=True))


def _batch_seed(seed, start):
    """A stateless int32 seed per (evaluation seed, batch start): same seed, same numbers."""
    return tf.constant((seed * 1_000_003 + start) % (2 ** 31 - 1), tf.int32)


class _ProgressLines:
    """Progress of a long L_K run in a log: a plain line after the first batch, then at most one
    per `interval` seconds, and one at the end (Keras' bar writes carriage returns there)."""

    def __init__(self, total, interval=30.0):
        self.total, self.interval = total, interval
        self.done, self.start, self.last_line = 0, time.time(), None
        self.first = None   # (examples, time) at the end of the first batch

    def add(self, count, values):
        self.done += count
        now = time.time()
        if (self.last_line is not None and now - self.last_line < self.interval
                and self.done < self.total):
            return
        self.last_line = now
        shown = ", ".join(f"{name} {value:.4f}" for name, value in values)
        line = (f"{self.done}/{self.total} examples: {shown} nats (running mean), "
                f"{now - self.start:.0f} s elapsed")
        if self.first is None:
            self.first = (self.done, now)
        elif self.done < self.total:
            # the rate since the first batch, which also compiled the bound
            seconds_per_example = (now - self.first[1]) / (self.done - self.first[0])
            line += f", ~{seconds_per_example * (self.total - self.done):.0f} s left"
        print(line, flush=True)


_DEFAULTS = experiment_config.EvalSettings  # the eval.* config defaults


def evaluate_images(model, images, iw_samples=_DEFAULTS.iw_samples,
                    batch_size=_DEFAULTS.batch_size, iw_batch_size=_DEFAULTS.iw_batch_size,
                    chunk_size=_DEFAULTS.chunk_size, seed=_DEFAULTS.seed, jit_compile="auto",
                    verbose=1):
    """Evaluate L_1 and L_K of `model` on float32 images [N, h, w, c]; returns a dict.

    jit_compile: True (XLA), False (TF graph) or "auto" (XLA on GPU, graph on CPU: faster
    there). Memory grows with iw_batch_size * chunk_size rows (~40 kB per row). The posterior
    draws use stateless seeds derived from `seed`, so the same call gives the same numbers.
    verbose: 0 silent, 1 Keras' progress bar (a terminal), 2 a plain line every 30 s (logs).

    Keys: elbo, iw_bound (mean nats), iw_samples, num_examples, kl (total), kl_per_layer,
    kl_per_unit (lists, bottom layer first), active_units_per_layer.
    """
    if iw_samples < 1:
        raise ValueError(f"iw_samples must be >= 1, got {iw_samples}")
    if chunk_size < 1 or batch_size < 1 or iw_batch_size < 1:
        raise ValueError("batch_size, iw_batch_size and chunk_size must be >= 1")
    num_examples = len(images)
    if num_examples == 0:
        raise ValueError("cannot evaluate on an empty split")
    chunk_size = min(chunk_size, iw_samples)

    elbo_fn = _elbo_fn(model, jit_compile)
    elbo_sum, kl_unit_sums = 0.0, None
    for start in range(0, num_examples, batch_size):
        elbo, kl_per_unit = elbo_fn(tf.constant(images[start:start + batch_size]),
                                    _batch_seed(seed, start))
        elbo_sum += float(tf.reduce_sum(elbo))
        sums = [np.sum(kl.numpy(), axis=0, dtype=np.float64) for kl in kl_per_unit]
        kl_unit_sums = sums if kl_unit_sums is None else [a + b for a, b in zip(kl_unit_sums,
                                                                                 sums)]
    kl_per_unit = [s / num_examples for s in kl_unit_sums]

    iw_fn = iw_bound_function(model, iw_samples, chunk_size, jit_compile)
    if verbose == 1:
        # L_K is shown as the running mean it is, not averaged again over the updates.
        progress = keras.utils.Progbar(num_examples, unit_name="example",
                                       stateful_metrics=["L_K"])
    else:
        progress = _ProgressLines(num_examples) if verbose else None
    iw_sum = 0.0
    for start in range(0, num_examples, iw_batch_size):
        batch = images[start:start + iw_batch_size]
        iw_sum += float(tf.reduce_sum(iw_fn(tf.constant(batch), _batch_seed(seed, start))))
        if progress is not None:
            progress.add(len(batch), values=[("L_K", iw_sum / min(start + len(batch),
                                                                  num_examples))])
    result = dict(
        elbo=elbo_sum / num_examples,
        iw_bound=iw_sum / num_examples,
        iw_samples=int(iw_samples),
        num_examples=int(num_examples),
        kl=float(sum(float(np.sum(k)) for k in kl_per_unit)),
        kl_per_layer=[float(np.sum(k)) for k in kl_per_unit],
        kl_per_unit=[k.tolist() for k in kl_per_unit],
        active_units_per_layer=[int(np.sum(k > ACTIVE_UNIT_THRESHOLD)) for k in kl_per_unit],
    )
    if not all(math.isfinite(result[k]) for k in ("elbo", "iw_bound")):
        raise FloatingPointError(f"evaluation produced non-finite bounds: elbo="
                                 f"{result['elbo']}, iw_bound={result['iw_bound']}")
    return result
