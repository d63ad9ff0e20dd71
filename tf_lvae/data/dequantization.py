"""Uniform dequantization of 8-bit grey levels: x = (k + u) / 256, u ~ U[0, 1).

A continuous density (the Gaussian p(x|z)) on discrete pixels is meaningless: it can grow
without bound by putting its mass on the 256 values. Spreading each grey level k over its bin
[k/256, (k+1)/256) makes the data continuous, and for D pixels E_u[log p(x)] - D log 256 is a
lower bound on the log-probability of the discrete image under the model that integrates p over
the bins (Theis et al., 2016, Sec. 3.1); D log 256 is 4,347 nats for MNIST, 5,678 for NORB.

The bins: 256 grey levels on [0, 1), so floor(256 x) gives k back exactly. The authors (parmesan's
`load_norb_small(dequantify=True, normalize=True)`) add U[0, 1) to the 0..255 levels once at
load time and divide by the training maximum (just under 256); here training draws fresh noise
every epoch and the scale is exactly 256.

Every function takes `xp`: numpy (`np`, for the one-off draws of `load_arrays`) or `tf.math`
(inside tf.data), so both paths run the same arithmetic.
"""
import numpy as np

LEVELS = 256
# The largest float32 u with k + u < k + 1 for every k <= 255 (their ulp is 2^-16); without the
# cap, k + u for u near 1 rounds up to k + 1 in float32 and x would leave its bin (or reach 1).
_MAX_NOISE = 1.0 - 2.0 ** -16


def grey_levels(images, xp=np):
    """float32 [..] in [0, 1] -> the 8-bit grey levels k in 0..255, as float32 [..].

    Takes either representation of the same level: an intensity k / 255 (what the loaders read,
    k < 255 gives floor(256 k / 255) = k and k = 255 the top bin) or a dequantized (k + u) / 256.
    """
    return xp.minimum(xp.maximum(xp.floor(images * LEVELS), 0.0), LEVELS - 1.0)


def dequantize(images, uniform, xp=np):
    """(k + u) / 256 for the grey levels k of `images`, u = `uniform` in [0, 1): float32 [..].

    The result lies in [k / 256, (k + 1) / 256) exactly, so floor(256 x) = k (256 x is exact:
    256 is a power of two).
    """
    levels = grey_levels(images, xp)
    return xp.minimum(levels + uniform, levels + _MAX_NOISE) / LEVELS
