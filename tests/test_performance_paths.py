"""The fast evaluation paths compute the reference maths: same weights + same seed -> same values.

No timings here (tools/benchmark.py measures speed); only that the lean L_K path
(`tf_lvae.fast.log_weights`, BatchNorm folding, the CPU graph / XLA choice) and the
mixed-precision heads leave the bound unchanged.
"""
import pathlib
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.model import bounds
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.fast import log_weights as fast_log_weights
from tf_lvae.model import layers
from tf_lvae.model import noise
from tf_lvae.training.train_step import build_model
from tf_lvae.model.spec import ModelSpec

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import benchmark  # noqa: E402

SMALL = dict(image_shape=(6, 6, 1), latent_sizes=(6, 4, 2), hidden_sizes=(16, 8, 8))
# The authors' options one at a time and all together (configs/mnist_authors.py).
AUTHORS = dict(batch_norm_heads=True, upward_input="mean", share_top_down=False,
               leaky_relu_slope=0.01)
LVAE_ONLY = {"upward_input", "share_top_down"}  # the VAE has no ladder: nothing to vary
# Both option sets for every (likelihood, model); each option alone for Bernoulli pixels.
# The fast tier keeps both option sets of both models for one likelihood each.
FAST_LEAN_CASES = {("bernoulli", "lvae", "paper"), ("bernoulli", "lvae", "authors"),
                   ("bernoulli", "vae", "paper"), ("bernoulli", "vae", "authors"),
                   ("gaussian", "lvae", "authors"), ("gaussian", "vae", "paper")}
LEAN_CASES = [pytest.param(likelihood, inference, options, id=f"{likelihood}-{inference}-{name}",
                           marks=[] if (likelihood, inference, name) in FAST_LEAN_CASES
                           else [pytest.mark.slow])
              for likelihood in ("bernoulli", "gaussian") for inference in ("lvae", "vae")
              for name, options in [("paper", {}), ("authors", AUTHORS)] + [
                  (name, {name: value}) for name, value in AUTHORS.items()
                  if likelihood == "bernoulli" and (inference == "lvae" or name not in LVAE_ONLY)]]


def _model(inference="lvae", likelihood="bernoulli", seed=0, **options):
    """A small model whose BatchNorm statistics are far from (0, 1), so folding matters."""
    keras.utils.set_random_seed(seed)
    model = build_model(ModelSpec(inference=inference, likelihood=likelihood, **SMALL,
                                  **options))
    rng = np.random.default_rng(seed)
    for variable in model.non_trainable_weights:
        if "moving_mean" in variable.path:
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.3, 3.0, variable.shape).astype(np.float32))
    for variable in model.trainable_weights:
        if "gamma" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(1.0 if "gamma" in variable.path else 0.0, 0.3,
                                       variable.shape).astype(np.float32))
    return model


def _images(n, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.random((n, *SMALL["image_shape"])) < 0.4).astype(np.float32)


def test_folded_batch_norm_block_equals_inference_call():
    model = _model()
    h = tf.constant(np.random.default_rng(2).normal(size=(5, 36)).astype(np.float32))
    block = model.up_mlps[0]
    folded = block.apply_inference_weights(block.inference_weights(), h)
    np.testing.assert_allclose(folded, block(h, training=False), rtol=1e-5, atol=1e-5)


def test_folded_batch_norm_head_equals_inference_call():
    head = _model(batch_norm_heads=True).down_heads[0]
    h = tf.constant(np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32))
    np.testing.assert_allclose(fast_log_weights._affine(head.inference_weights(), h),
                               head.pre_activation(h, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("likelihood, inference, options", LEAN_CASES)
def test_lean_log_weights_equal_reference(inference, likelihood, options):
    model = _model(inference, likelihood, **options)
    x = model.flatten_images(_images(3))
    seed = tf.constant(11)
    reference = model.log_weights(x, 4, seed=seed)
    lean = fast_log_weights.log_weights(model, x, 4, seed=seed)
    assert lean.shape == (4, 3)
    np.testing.assert_allclose(lean, reference, rtol=1e-5, atol=2e-4)
    # the CPU evaluation path runs it as a TF graph, its elementwise work in XLA functions
    for fused in (False, True):
        graph = tf.function(lambda x: fast_log_weights.log_weights(model, x, 4, seed=seed,
                                                                     fused=fused))
        np.testing.assert_allclose(graph(x), reference, rtol=1e-5, atol=2e-4)


def test_lean_log_weights_equal_reference_under_xla():
    """The GPU path (XLA), with the generator XLA code uses (Threefry, which TF's CPU kernels
    lack): XLA vs XLA."""
    model = _model()
    x = model.flatten_images(_images(3))
    seeded = noise.Seeded(tf.constant(11), noise.THREEFRY)
    xla = tf.function(lambda x: fast_log_weights.log_weights(model, x, 4, seed=seeded),
                      jit_compile=True)
    xla_reference = tf.function(lambda x: model.log_weights(x, 4, seed=seeded),
                                jit_compile=True)
    np.testing.assert_allclose(xla(x), xla_reference(x), rtol=1e-5, atol=2e-4)


def _reference_streamed_bound(model, x, seed, chunk, total, algorithm):
    """log-mean-exp of the reference model.log_weights drawn with the chunk seeds of
    iw_bound_per_example (chunks of `chunk`, then the remainder)."""
    pieces = []
    sizes = [chunk] * (total // chunk) + ([total % chunk] if total % chunk else [])
    for index, size in enumerate(sizes):
        chunk_seed = tf.random.stateless_uniform([], seed=tf.stack([seed, index]), minval=None,
                                                 maxval=None, dtype=tf.int32)
        pieces.append(model.log_weights(x, size, seed=noise.Seeded(chunk_seed, algorithm)))
    return bounds.log_mean_exp(tf.concat(pieces, 0), axis=0)


def test_streamed_bound_equals_reference_bound():
    """iw_bound_per_example (chunks + remainder, per-chunk seeds) == log-mean-exp of the
    reference model.log_weights drawn with the same chunk seeds."""
    model = _model()
    images = _images(2)
    x = model.flatten_images(images)
    seed, chunk, total = 5, 3, 7
    expected = _reference_streamed_bound(model, x, seed, chunk, total, noise.DEFAULT)
    bound = tf.function(lambda images: evaluation.iw_bound_per_example(
        model, images, total, chunk, seed=tf.constant(seed)))
    np.testing.assert_allclose(bound(images), expected, rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("jit_compile, inference, options", [
    pytest.param(jit, inference, options, id=f"{jit}-{inference}-{name}",
                 # the fast tier: the CPU graph of both models, XLA (GPU path) of one
                 marks=[pytest.mark.slow] if jit and (inference, name) != ("lvae", "authors")
                 else [])
    for jit in (False, True) for inference in ("lvae", "vae")
    for name, options in (("paper", {}), ("authors", AUTHORS))])
def test_production_bound_equals_reference_bound(jit_compile, inference, options):
    """What evaluate_images runs (CPU: a graph with fused elementwise work, the VAE's latent
    pass as one XLA function; GPU: XLA), with evaluation's Box-Muller noise, equals the
    reference drawn with the same generator."""
    model = _model(inference, **options)
    images = _images(2)
    x = model.flatten_images(images)
    seed, chunk, total = 5, 3, 7
    expected = _reference_streamed_bound(model, x, seed, chunk, total, noise.BOX_MULLER)
    production = evaluation.iw_bound_function(model, total, chunk, jit_compile=jit_compile)
    np.testing.assert_allclose(production(images, tf.constant(seed)), expected, rtol=1e-5,
                               atol=2e-4)


@pytest.mark.slow
def test_evaluate_images_graph_equals_xla():
    """The CPU graph and XLA draw the same Box-Muller noise: the same bounds up to float
    rounding of different matmul kernels."""
    model = _model()
    images = _images(16)
    auto = evaluation.evaluate_images(model, images, iw_samples=200, iw_batch_size=8,
                                      chunk_size=64, jit_compile="auto", verbose=0)
    xla = evaluation.evaluate_images(model, images, iw_samples=200, iw_batch_size=8,
                                     chunk_size=64, jit_compile=True, verbose=0)
    assert auto["elbo"] == pytest.approx(xla["elbo"], abs=1e-3)
    assert auto["iw_bound"] == pytest.approx(xla["iw_bound"], abs=1e-3)
    np.testing.assert_allclose(auto["kl_per_layer"], xla["kl_per_layer"], rtol=1e-4)
    assert auto["iw_bound"] >= auto["elbo"] - 1.0


def test_resolve_jit_compile():
    assert evaluation.resolve_jit_compile(True) is True
    assert evaluation.resolve_jit_compile(False) is False
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert evaluation.resolve_jit_compile("auto") is has_gpu


def test_mixed_precision_keeps_distribution_heads_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model(ModelSpec(**SMALL))
        assert model.up_mlps[0].compute_dtype == "bfloat16"
        assert model.up_heads[0].dense.compute_dtype == "float32"
        assert model.observation.logits.compute_dtype == "float32"
        x = model.flatten_images(_images(2))
        lean = fast_log_weights.log_weights(model, x, 3, seed=tf.constant(1))
        reference = model.log_weights(x, 3, seed=tf.constant(1))
        assert lean.dtype == tf.float32 and reference.dtype == tf.float32
        assert np.all(np.isfinite(lean.numpy()))
        np.testing.assert_allclose(lean, reference, rtol=0.05, atol=1.0)  # bf16 rounding
    finally:
        keras.config.set_dtype_policy(previous)
    assert layers.distribution_dtype() is None
    # the same through build_model's precision, which leaves the global policy as it was
    model = build_model(ModelSpec(**SMALL), "mixed_bfloat16")
    assert model.up_mlps[0].compute_dtype == "bfloat16"
    assert model.up_heads[0].dense.compute_dtype == "float32"
    assert keras.config.dtype_policy().name == previous.name


def test_benchmark_flop_counts_match_the_peer_convention():
    spec = ModelSpec()
    lvae, vae = benchmark.flops(spec, "lvae", 5000), benchmark.flops(spec, "vae", 5000)
    assert lvae["train_per_example"] == 11_098_368       # peer README: 11.10 M
    assert vae["train_per_example"] == 10_184_448        # peer README: 10.18 M
    # L_K: the upward pass once, then K top-down passes and decoders
    assert lvae["lk_per_example"] == pytest.approx(8.38e9, rel=1e-3)


def test_softplus_by_log_matches_float64_softplus():
    """The L_K likelihood's softplus, log(1 + exp(-|l|)) in place of log1p, within float32
    rounding of the float64 value, from tiny to huge logits of either sign."""
    logits = np.concatenate([np.linspace(-120.0, 120.0, 20001), [-1e-7, 0.0, 1e-7, 88.0, -88.0]])
    expected = np.logaddexp(0.0, logits)
    computed = tf.function(fast_log_weights.softplus_by_log, jit_compile=True)(
        tf.constant(logits, tf.float32)).numpy()
    np.testing.assert_allclose(computed, expected, rtol=2e-7, atol=1.2e-7)
    # the sum over 784 pixels (what L_K uses) against float64
    rows = np.random.default_rng(3).normal(0.0, 8.0, (50, 784))
    sums = tf.reduce_sum(fast_log_weights.softplus_by_log(tf.constant(rows, tf.float32)), -1)
    np.testing.assert_allclose(sums, np.logaddexp(0.0, rows).sum(-1), rtol=1e-6)
