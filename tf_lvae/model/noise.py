"""Standard-normal noise of the reparameterisation trick, and which generator draws it.

This module is the one seam between the model and the speed of its random numbers. The
model's methods take one noise argument, `seed`:
  * None: the global RNG, not reproducible;
  * `Seeded(seed, algorithm)`: stateless draws, a pure function of the int32 seed, so a resumed
    run or a repeated evaluation draws the same numbers; a bare int32 seed is
    `Seeded(seed)`, the default generator.
Latent layer i of a pass draws from the seed pair [seed, i] (`layer_normal`), in the model and
in its fast twin (`tf_lvae.fast.log_weights`) alike. The model never chooses a generator; its
callers do, once each:

  DEFAULT (Philox, TensorFlow's default): training run as TF ops, and serving. TensorFlow's
    own CPU kernels have only Philox.
  THREEFRY: XLA-compiled train steps (`algorithm(jit_compile)`, in
    `tf_lvae.training.train_step`). XLA:CPU expands Philox into scalar 64-bit multiplies, a
    measurable share of an XLA-compiled LVAE train step, while its Threefry vectorises
    (docs/PERFORMANCE.md).
  BOX_MULLER: evaluation's L_1 and L_K (`tf_lvae.evaluation.likelihood`): Threefry bits turned
    into normals by the Box-Muller transform, always XLA-compiled (inline in XLA code, as a
    small XLA function called from a TF graph). The L_5000 pass draws 620k normals per
    example, which this generator draws faster than TF's CPU kernel (docs/PERFORMANCE.md),
    and a TF-graph and an XLA evaluation draw the same numbers.
The generators are different streams: the same seed draws different numbers under each.
"""
import collections
import math

import tensorflow as tf

DEFAULT = "auto_select"   # Philox on CPU and GPU: the only one TF's CPU kernels implement
THREEFRY = "threefry"
BOX_MULLER = "box_muller"   # evaluation's generator (see the module docstring)

# Taylor coefficients of sin and cos, used on [0, pi/2) only: there the truncation errors are
# below 6e-8 (sin, to x^11) and 1e-9 (cos, to x^14), under float32's rounding.
_SIN_COEFFICIENTS = [(-1) ** k / math.factorial(2 * k + 1) for k in range(6)]
_COS_COEFFICIENTS = [(-1) ** k / math.factorial(2 * k) for k in range(8)]


def algorithm(jit_compile):
    """The training generator for code compiled with XLA (jit_compile=True) or run as TF
    ops."""
    return THREEFRY if jit_compile else DEFAULT


class Seeded(collections.namedtuple("Seeded", ["seed", "algorithm"], defaults=[DEFAULT])):
    """Reproducible noise: stateless draws from `seed` with generator `algorithm`.

    seed: an int32 scalar (Python int or tensor) keying a pass, or the int32 pair [2] of one
    draw (`layer_seed`). algorithm: DEFAULT, THREEFRY or BOX_MULLER. A namedtuple, so that
    tf.function traces the seed as a tensor input and the algorithm as a Python constant.
    """
    __slots__ = ()


def seeded(seed):
    """The noise argument `seed` as None (the global RNG) or a `Seeded`: a bare int32 seed
    becomes `Seeded(seed)`, the default generator."""
    return seed if seed is None or isinstance(seed, Seeded) else Seeded(seed)


def layer_seed(seed, layer):
    """The seed of 0-based latent layer `layer` in a pass seeded by `seed` (`seeded`): None,
    or the same generator on the int32 pair [seed, layer]."""
    seed = seeded(seed)
    if seed is None:
        return None
    return Seeded(tf.stack([tf.cast(seed.seed, tf.int32), layer]), seed.algorithm)


def layer_normal(shape, seed, layer, dtype=tf.float32):
    """N(0, I) noise of `shape` for 0-based latent layer `layer` of a pass seeded by `seed`:
    the eps of every posterior draw and prior sample (`layer_seed`)."""
    key = layer_seed(seed, layer)
    if key is None:
        return standard_normal(shape, dtype=dtype)
    return standard_normal(shape, key.seed, key.algorithm, dtype)


def standard_normal(shape, seed=None, alg=DEFAULT, dtype=tf.float32):
    """N(0, I) noise of `shape`: from the global RNG (seed None) or stateless from `seed`,
    an int32 pair, with generator `alg` (DEFAULT, THREEFRY or BOX_MULLER)."""
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    if alg == BOX_MULLER:
        # The shape travels as an empty tensor's shape: XLA needs it static, and a compiled
        # function's tensor arguments are not.
        shape_carrier = tf.zeros(tf.concat([tf.cast(shape, tf.int32), [0]], 0), dtype)
        return _box_muller_compiled(shape_carrier, tf.cast(seed, tf.int32))
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype, alg=alg)


def _polynomial(x, coefficients):
    """sum_k coefficients[k] x^k by Horner's rule."""
    result = coefficients[-1]
    for coefficient in reversed(coefficients[:-1]):
        result = result * x + coefficient
    return result


def sin_cos_of_turns(angle_bits):
    """(sin, cos) of the angle 2 pi (angle_bits / 2^31) for int32 angle_bits in [0, 2^31).

    The top 2 of the 31 bits select the quadrant exactly, so the polynomials only ever see
    [0, pi/2), where they are accurate to float32 (XLA:CPU's general sin/cos, with their range
    reduction, made a Box-Muller transform far slower; docs/PERFORMANCE.md).
    """
    quadrant = tf.bitwise.right_shift(angle_bits, 29)
    fraction = tf.bitwise.bitwise_and(angle_bits, (1 << 29) - 1)
    phi = tf.cast(fraction, tf.float32) * (math.pi / 2 / 2 ** 29)
    phi_squared = phi * phi
    sin_phi = phi * _polynomial(phi_squared, _SIN_COEFFICIENTS)
    cos_phi = _polynomial(phi_squared, _COS_COEFFICIENTS)
    # rotating by quadrant * pi/2: (sin, cos) -> (cos, -sin) -> (-sin, -cos) -> (-cos, sin)
    odd = tf.bitwise.bitwise_and(quadrant, 1) == 1
    sin = tf.where(odd, cos_phi, sin_phi)
    cos = tf.where(odd, sin_phi, cos_phi)
    sin = tf.where(quadrant >= 2, -sin, sin)
    cos = tf.where((quadrant == 1) | (quadrant == 2), -cos, cos)
    return sin, cos


def box_muller_normal(num_values, seed):
    """num_values float32 N(0, 1) draws [num_values] from an int32 seed pair: Box-Muller on
    Threefry bits, each pair of 32-bit words giving two normals (r cos t, r sin t).

    Runs under XLA: num_values is a Python int or a scalar XLA resolves when compiling.
    """
    pairs = (num_values + 1) // 2
    bits = tf.random.stateless_uniform([pairs, 2], seed=seed, minval=None, maxval=None,
                                       dtype=tf.uint32, alg=THREEFRY)
    # 31 bits per word as a non-negative int32: exact in float32 near 0, and split by sign-free
    # shifts into the angle's quadrant and fraction
    words = tf.bitcast(tf.bitwise.right_shift(bits, 1), tf.int32)
    # u in (0, 1] (1 after float rounding at the top): never log(0); radius <= 6.66
    uniform = (tf.cast(words[:, 0], tf.float32) + 0.5) * 2.0 ** -31
    radius = tf.sqrt(-2.0 * tf.math.log(tf.minimum(uniform, 1.0)))
    sin, cos = sin_cos_of_turns(words[:, 1])
    return tf.reshape(tf.stack([radius * cos, radius * sin], -1), [-1])[:num_values]


def _box_muller_from_shape_carrier(shape_carrier, seed):
    shape = tf.shape(shape_carrier)[:-1]
    normals = box_muller_normal(tf.reduce_prod(shape), seed)
    return tf.cast(tf.reshape(normals, shape), shape_carrier.dtype)


_box_muller_compiled = tf.function(_box_muller_from_shape_carrier, jit_compile=True,
                                   reduce_retracing=True)
