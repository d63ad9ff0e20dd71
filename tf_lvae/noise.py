"""Standard-normal noise of the reparameterisation trick, and which generator draws it.

Seeded noise is stateless, a pure function of the seed, so a resumed run or a repeated
evaluation draws the same numbers. The counter-based generator matters for speed: XLA:CPU
expands Philox (TensorFlow's default on CPU and GPU) into scalar 64-bit multiplies, which
took ~7% of an XLA-compiled LVAE train step here, while its Threefry vectorises and costs
about nothing (docs/PERFORMANCE.md). TensorFlow's own CPU kernels have only Philox. So
XLA-compiled functions draw with Threefry and everything else with the default.
"""
import tensorflow as tf

DEFAULT = "auto_select"   # Philox on CPU and GPU: the only one TF's CPU kernels implement
THREEFRY = "threefry"


def algorithm(jit_compile):
    """The generator for code compiled with XLA (jit_compile=True) or run as TF ops."""
    return THREEFRY if jit_compile else DEFAULT


def standard_normal(shape, seed=None, alg=DEFAULT, dtype=tf.float32):
    """N(0, I) noise of `shape`: from the global RNG (seed None) or stateless from `seed`,
    an int32 pair, with generator `alg`."""
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg=alg)
