"""Gradient clipping as the authors' code does it: a total-norm constraint, then element-wise.

`run_models.py` of casperkaae/LVAE rescales all gradients together so their global L2 norm is
at most 4 (Lasagne's `total_norm_constraint`), then clips every element to [-0.9, 0.9], then
takes the Adam step (`shared/OFFICIAL_CODE.md`). The paper does not mention clipping, so both
thresholds default to 0 (off) in `configs/base.py`; configs/mnist_authors.py sets 4 and 0.9.

Keras' own `global_clipnorm` / `clipvalue` cannot do this: an optimizer takes only one of them,
and under a tf.distribute strategy it clips each replica's gradient before the replicas are
summed, which is not the global batch's gradient.
"""
import tensorflow as tf


def clip_gradients(gradients, global_norm=0.0, value=0.0, scale=1.0):
    """Total-norm constraint at `global_norm`, then element-wise clip at +-`value` (0: off).

    gradients: a list of tensors (None entries pass through). scale: the loss scale the
    gradients carry under mixed_float16; clipping S*g at S*c is S times clipping g at c, so the
    thresholds are multiplied by it and the unscaled step equals float32's. Non-finite
    gradients stay non-finite (the train step skips such steps).
    """
    present = [g for g in gradients if g is not None]
    if global_norm > 0 and present:
        clipped, _ = tf.clip_by_global_norm(present, global_norm * scale)
        clipped = iter(clipped)
        gradients = [None if g is None else next(clipped) for g in gradients]
    if value > 0:
        gradients = [None if g is None else tf.clip_by_value(g, -value * scale, value * scale)
                     for g in gradients]
    return gradients


def clip_global_gradients(gradients, global_norm=0.0, value=0.0, scale=1.0):
    """`clip_gradients` of the global batch's gradient, in a replica's train step.

    Each replica holds the gradient of its share of the loss (loss / R), and the optimizer sums
    the replicas' gradients. Clipping must see their sum: it is all-reduced here, clipped, and
    divided by R again, so the optimizer's sum is the clipped global gradient. On one replica
    this is `clip_gradients`.
    """
    if global_norm <= 0 and value <= 0:
        return gradients
    replica = tf.distribute.get_replica_context()
    replicas = 1 if replica is None else replica.num_replicas_in_sync
    if replicas == 1:
        return clip_gradients(gradients, global_norm, value, scale)
    indices = [i for i, g in enumerate(gradients) if g is not None]
    summed = replica.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in indices])
    clipped = clip_gradients(summed, global_norm, value, scale)
    gradients = list(gradients)
    for i, g in zip(indices, clipped):
        gradients[i] = g / replicas
    return gradients
