"""Lean importance log weights for L_K: the hot loop of evaluation, doing only what it needs.

`HierarchicalVAE.log_weights` builds the full objective (tfd objects, analytic KLs, BatchNorm
as separate ops) and is the reference. Evaluating L_5000 runs the top-down pass and the decoder
5000 times per example, so here the same log weights

    log w = log p(x | z_1) + sum_i [log p(z_i | z_{i+1}) - log q(z_i | .)]

are computed with less work, same maths (equal to float rounding; `tests/test_performance_paths`
checks it against the reference with the same stateless seeds):
  * everything that depends on x only is computed once per example, not per sample: the
    upward pass, the BatchNorm-folded weights (`MLPBlock.inference_weights`), 1/var_hat and
    mean_hat/var_hat of the precision-weighted merge, sum log var of q(z_L | x);
  * variances stay variances (no sqrt -> Normal -> square round trips), no KL terms;
  * log 2pi cancels between p and q per unit; (z - mean_q)^2 / var_q = eps^2 exactly;
    log var_q - log var_p = -log(1 + var_p / var_hat) (one log instead of two);
  * hidden layers are matmul + bias_add + activation: one fused oneDNN call in a CPU graph.
The noise is drawn per layer, top to bottom, with the shapes and per-layer seeds
`HierarchicalVAE.posterior_draws` uses, so a stateless seed gives the reference's samples.
"""
import collections

import tensorflow as tf

from tf_lvae import gaussian_math
from tf_lvae import noise

# What depends on the examples only: BatchNorm-folded weights and per-example statistics.
Prepared = collections.namedtuple("Prepared", ["weights", "stats"])


def _noise(shape, seed, layer, dtype, alg):
    layer_seed = None if seed is None else tf.stack([tf.cast(seed, tf.int32), layer])
    return noise.standard_normal(shape, layer_seed, alg, dtype)


def _tile(tensor, num_samples):
    """[B, ...] -> [num_samples * B, ...], sample-major (as `model.tile_samples`)."""
    multiples = tf.concat([[num_samples], tf.ones([tf.rank(tensor) - 1], tf.int32)], 0)
    return tf.tile(tensor, multiples)


def _head(head, features):
    """(mean, variance) of a GaussianHead, computed in the head's (float32) dtype."""
    return head.mean_and_variance(features)


def _mlp_weights(model):
    return dict(up=[mlp.inference_weights() for mlp in model.up_mlps],
                down=[mlp.inference_weights() for mlp in model.down_mlps],
                decoder=model.decoder_mlp.inference_weights())


def prepare(model, x):
    """Per-example work for `log_weights`, done once for all K samples of x [B, D_x]."""
    weights = _mlp_weights(model)
    if model.spec.inference == "vae":
        mean, var = _head(model.up_heads[0],
                          model.up_mlps[0].apply_inference_weights(weights["up"][0], x))
        return Prepared(weights, dict(mean=mean, std=tf.sqrt(var),
                                      sum_log_var=tf.reduce_sum(tf.math.log(var), -1)))
    lower, d = [], x
    for i, (mlp, head) in enumerate(zip(model.up_mlps, model.up_heads)):
        d = mlp.apply_inference_weights(weights["up"][i], d)
        mean, var = _head(head, d)
        lower.append((tf.math.reciprocal(var), mean / var))   # precision, mean * precision
    top_mean, top_var = mean, var
    return Prepared(weights, dict(lower=lower[:-1], mean=top_mean, std=tf.sqrt(top_var),
                                  sum_log_var=tf.reduce_sum(tf.math.log(top_var), -1)))


def _draw_first(prepared, num_samples, seed, layer, alg):
    """z ~ N(mean, std^2) tiled over samples, and log p_std(z) - log q(z) without log 2pi."""
    stats = prepared.stats
    mean = _tile(stats["mean"], num_samples)
    eps = _noise(tf.shape(mean), seed, layer, mean.dtype, alg)
    return mean, eps


def _lvae_latents(model, prepared, num_samples, seed, alg):
    """z_1 [S*B, D_1] and sum_i log p(z_i|z_{i+1}) - log q(z_i|.) [S*B] for the LVAE."""
    stats, weights = prepared.stats, prepared.weights
    num_layers = model.spec.num_layers
    mean, eps = _draw_first(prepared, num_samples, seed, num_layers - 1, alg)
    z = mean + _tile(stats["std"], num_samples) * eps
    # top layer: log N(z; 0, 1) - log N(z; mean, var) = 0.5 (eps^2 - z^2 + log var)
    log_ratio = (0.5 * tf.reduce_sum(tf.square(eps) - tf.square(z), -1)
                 + 0.5 * _tile(stats["sum_log_var"], num_samples))
    for i in reversed(range(num_layers - 1)):
        mean_p, var_p = _head(model.down_heads[i], model.down_mlps[i].apply_inference_weights(
            weights["down"][i], z))
        precision_hat, mean_times_precision_hat = stats["lower"][i]
        precision_p = tf.math.reciprocal(var_p)
        var_q = tf.math.reciprocal(_tile(precision_hat, num_samples) + precision_p)  # eq. 18
        mean_q = (_tile(mean_times_precision_hat, num_samples) + mean_p * precision_p) * var_q
        eps = _noise(tf.shape(mean_q), seed, i, mean_q.dtype, alg)
        z = mean_q + tf.sqrt(var_q) * eps
        # log N(z; mean_p, var_p) - log N(z; mean_q, var_q)
        log_ratio += 0.5 * tf.reduce_sum(
            tf.square(eps) + tf.math.log(var_q * precision_p)
            - tf.math.squared_difference(z, mean_p) * precision_p, -1)
    return z, log_ratio


def _vae_latents(model, prepared, num_samples, seed, alg):
    """z_1 and the log ratio for the bottom-up VAE: q(z_i | z_{i-1}), then the priors."""
    stats, weights = prepared.stats, prepared.weights
    num_layers = model.spec.num_layers
    mean, eps = _draw_first(prepared, num_samples, seed, 0, alg)
    zs = [mean + _tile(stats["std"], num_samples) * eps]
    # -log q(z_1 | x) without log 2pi: 0.5 (eps^2 + log var)
    log_ratio = 0.5 * (tf.reduce_sum(tf.square(eps), -1)
                       + _tile(stats["sum_log_var"], num_samples))
    for i in range(1, num_layers):
        mean, var = _head(model.up_heads[i], model.up_mlps[i].apply_inference_weights(
            weights["up"][i], zs[-1]))
        eps = _noise(tf.shape(mean), seed, i, mean.dtype, alg)
        zs.append(mean + tf.sqrt(var) * eps)
        log_ratio += 0.5 * tf.reduce_sum(tf.square(eps) + tf.math.log(var), -1)
    log_ratio -= 0.5 * tf.reduce_sum(tf.square(zs[-1]), -1)   # log p(z_L), N(0, I)
    for i in range(num_layers - 1):
        mean_p, var_p = _head(model.down_heads[i], model.down_mlps[i].apply_inference_weights(
            weights["down"][i], zs[i + 1]))
        log_ratio -= 0.5 * tf.reduce_sum(
            tf.math.log(var_p) + tf.math.squared_difference(zs[i], mean_p) / var_p, -1)
    return zs[0], log_ratio


def _log_likelihood(model, prepared, x, z1, num_samples):
    """log p(x | z_1) summed over pixels [S*B], x [B, D_x] tiled over samples."""
    features = model.decoder_mlp.apply_inference_weights(prepared.weights["decoder"], z1)
    if model.spec.likelihood == "bernoulli":
        dense = model.observation.logits
        features = tf.cast(features, dense.compute_dtype)
        # bias_add (not a broadcast add): CPU graphs fuse it into the matmul
        logits = tf.nn.bias_add(tf.matmul(features, dense.kernel), dense.bias)
        # log Bernoulli(x; sigmoid(l)) = x l - softplus(l), valid for x in [0, 1]; the x l
        # term contracts the [S, B, D] logits with x [B, D] directly: no tiled copy of x
        x_dot_logits = tf.einsum("sbd,bd->sb", tf.reshape(
            logits, [num_samples, -1, model.spec.num_pixels]), tf.cast(x, logits.dtype))
        return tf.reshape(x_dot_logits, [-1]) - tf.reduce_sum(tf.nn.softplus(logits), -1)
    mean, var = _head(model.observation.head, features)
    return tf.reduce_sum(gaussian_math.gaussian_log_prob(_tile(x, num_samples), mean, var), -1)


def log_weights(model, x, num_samples, prepared=None, seed=None, noise_alg=noise.DEFAULT):
    """Importance log weights [K, B] of flattened x [B, D_x] in inference mode.

    num_samples (K): Python int or int32 scalar tensor. prepared: `prepare(model, x)`, to
    share the per-example work between chunks. seed: None (global RNG) or an int32 scalar
    (stateless, the same draws as `model.log_weights(x, K, seed=seed, noise_alg=noise_alg)`).
    """
    if prepared is None:
        prepared = prepare(model, x)
    latents = _lvae_latents if model.spec.inference == "lvae" else _vae_latents
    z1, log_ratio = latents(model, prepared, num_samples, seed, noise_alg)
    log_px = _log_likelihood(model, prepared, x, z1, num_samples)
    return tf.reshape(log_px + log_ratio, [num_samples, -1])
