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
  * per-example tensors broadcast over the samples inside the elementwise work (no tiled
    copies of x or of the merge's per-example terms);
  * hidden layers are matmul + bias_add + activation: one fused oneDNN call in a CPU graph;
  * fused=True (what `evaluation` uses in a CPU graph) runs the elementwise work between two
    matmuls (softplus variances, merge, draw, log densities, the Bernoulli likelihood) as
    small XLA-compiled functions: one loop each instead of one pass per op, while the
    matmuls stay oneDNN's, which beat XLA:CPU's; only the VAE's latent passes (seeded,
    Box-Muller noise) run as one XLA function, small matmuls included: faster there.
The noise is drawn per layer, top to bottom, with the shapes and per-layer seeds
`HierarchicalVAE.posterior_draws` uses (`noise.layer_normal`), so a seed (`noise.Seeded`) gives
the reference's samples.
"""
import collections

import tensorflow as tf

from tf_lvae.model import gaussian_math
from tf_lvae.model import layers
from tf_lvae.model import noise

# What depends on the examples only: BatchNorm-folded weights and per-example statistics.
Prepared = collections.namedtuple("Prepared", ["weights", "stats"])


def _tile(tensor, num_samples):
    """[B, ...] -> [num_samples * B, ...], sample-major (as `model.tile_samples`)."""
    multiples = tf.concat([[num_samples], tf.ones([tf.rank(tensor) - 1], tf.int32)], 0)
    return tf.tile(tensor, multiples)


def _mlp_weights(model):
    """BatchNorm-folded (kernel, bias) pairs of every MLP and latent head."""
    def folded(blocks):
        return [block.inference_weights() for block in blocks]
    return dict(up=folded(model.up_mlps), up_heads=folded(model.up_heads),
                down=folded(model.down_mlps), down_heads=folded(model.down_heads),
                inference_down=folded(model.inference_down_mlps),
                inference_down_heads=folded(model.inference_down_heads),
                decoder=model.decoder_mlp.inference_weights())


def prepare(model, x):
    """Per-example work for `log_weights`, done once for all K samples of x [B, D_x]."""
    weights = _mlp_weights(model)
    if model.spec.inference == "vae":
        mean, var = layers.gaussian_parameters(
            _affine(weights["up_heads"][0],
                    model.up_mlps[0].apply_inference_weights(weights["up"][0], x)),
            model.up_heads[0].variance_floor)
        return Prepared(weights, dict(mean=mean, std=tf.sqrt(var),
                                      sum_log_var=tf.reduce_sum(tf.math.log(var), -1)))
    lower, up_input = [], x
    for i, (mlp, head) in enumerate(zip(model.up_mlps, model.up_heads)):
        d = mlp.apply_inference_weights(weights["up"][i], up_input)
        mean, var = layers.gaussian_parameters(_affine(weights["up_heads"][i], d),
                                               head.variance_floor)
        lower.append((tf.math.reciprocal(var), mean / var))   # precision, mean * precision
        up_input = d if model.spec.upward_input == "hidden" else mean
    top_mean, top_var = mean, var
    return Prepared(weights, dict(lower=lower[:-1], mean=top_mean, std=tf.sqrt(top_var),
                                  sum_log_var=tf.reduce_sum(tf.math.log(top_var), -1)))


def _dense(dense, features):
    """A Keras Dense as matmul + bias_add: one fused oneDNN call in a CPU graph."""
    return _affine((dense.kernel, dense.bias), tf.cast(features, dense.compute_dtype))


def _affine(kernel_and_bias, features):
    """features @ kernel + bias as matmul + bias_add (a head's `inference_weights()`)."""
    kernel, bias = kernel_and_bias
    return tf.nn.bias_add(tf.matmul(tf.cast(features, kernel.dtype), kernel), bias)


def _by_sample(rows, batch_size):
    """Sample-major rows [S*B, ...] -> [S, B, ...], so per-example tensors [B, ...] broadcast
    over the samples instead of being tiled."""
    return tf.reshape(rows, tf.concat([[-1, batch_size], tf.shape(rows)[1:]], 0))


# ---- The elementwise work between two matmuls, as pure functions of tensors. With fused=True
# each runs XLA-compiled inside the CPU graph: one loop instead of one pass per op.
def _lvae_layer_terms(pre_activation, precision_hat, mean_times_precision_hat, eps, floor):
    """One top-down LVAE layer from the pre-activation [S*B, 2D] of its prior's head.

    Returns the draw z ~ q(z | .) = merge(N(mean_hat, var_hat), p(z | parent)) (eqs 17-19),
    [S*B, D], and log p(z | parent) - log q(z | .) summed over units, [S*B]. eps [S*B, D] is
    the standard-normal noise; precision_hat = 1/var_hat and mean_hat/var_hat are [B, D].
    """
    batch_size = tf.shape(precision_hat)[0]
    mean_p, var_p = layers.gaussian_parameters(_by_sample(pre_activation, batch_size), floor)
    precision_p = tf.math.reciprocal(var_p)
    var_q = tf.math.reciprocal(precision_hat + precision_p)   # eq. 18
    mean_q = (mean_times_precision_hat + mean_p * precision_p) * var_q
    return _merged_draw_terms(mean_q, var_q, mean_p, precision_p, eps)


def _lvae_unshared_layer_terms(top_down_pre_activation, prior_pre_activation, precision_hat,
                               mean_times_precision_hat, eps, floor):
    """`_lvae_layer_terms` where the merge takes the separate inference top-down network's
    N(mean_t, var_t) (pre-activation [S*B, 2D]) and log p the generative prior's."""
    batch_size = tf.shape(precision_hat)[0]
    mean_t, var_t = layers.gaussian_parameters(
        _by_sample(top_down_pre_activation, batch_size), floor)
    mean_p, var_p = layers.gaussian_parameters(_by_sample(prior_pre_activation, batch_size),
                                               floor)
    precision_t = tf.math.reciprocal(var_t)
    var_q = tf.math.reciprocal(precision_hat + precision_t)   # eq. 18
    mean_q = (mean_times_precision_hat + mean_t * precision_t) * var_q
    return _merged_draw_terms(mean_q, var_q, mean_p, tf.math.reciprocal(var_p), eps)


def _merged_draw_terms(mean_q, var_q, mean_p, precision_p, eps):
    """z = mean_q + sqrt(var_q) eps and log p(z) - log q(z) summed over units; per-example or
    per-sample parameters [S, B, D] or [B, D], eps [S*B, D]; returns ([S*B, D], [S*B])."""
    rows_shape, batch_size = tf.shape(eps), tf.shape(mean_q)[-2]
    eps = _by_sample(eps, batch_size)
    z = mean_q + tf.sqrt(var_q) * eps
    # log N(z; mean_p, var_p) - log N(z; mean_q, var_q): log 2pi cancels,
    # (z - mean_q)^2 / var_q = eps^2
    term = 0.5 * tf.reduce_sum(tf.square(eps) + tf.math.log(var_q * precision_p)
                               - tf.math.squared_difference(z, mean_p) * precision_p, -1)
    return tf.reshape(z, rows_shape), tf.reshape(term, [-1])


def _gaussian_draw_terms(pre_activation, eps, floor):
    """A VAE posterior layer q(z | z_below) from its head's pre-activation [N, 2D]: the draw
    z [N, D] and -log q(z) without log 2pi, 0.5 sum(eps^2 + log var) [N]."""
    mean, var = layers.gaussian_parameters(pre_activation, floor)
    return mean + tf.sqrt(var) * eps, 0.5 * tf.reduce_sum(tf.square(eps) + tf.math.log(var), -1)


def _gaussian_log_density(pre_activation, z, floor):
    """log N(z; mean, var) without log 2pi, summed over units [N], from the head's
    pre-activation [N, 2D]."""
    mean, var = layers.gaussian_parameters(pre_activation, floor)
    return -0.5 * tf.reduce_sum(tf.math.log(var) + tf.math.squared_difference(z, mean) / var,
                                -1)


def softplus_by_log(logits):
    """softplus(l) = max(l, 0) + log(1 + exp(-|l|)), elementwise.

    tf.nn.softplus uses log1p; since exp(-|l|) is in (0, 1], log(1 + u) is within one float32
    rounding of 1 (6e-8 absolute) of log1p(u), and XLA:CPU computes it faster
    (docs/PERFORMANCE.md): this is the costliest elementwise pass of L_K (5000 x 784 logits
    per example).
    """
    return tf.maximum(logits, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(logits)))


def _bernoulli_log_likelihood(logits, x):
    """sum_d log Bernoulli(x_d; sigmoid(l_d)) = sum_d x_d l_d - softplus(l_d) per row [S*B]
    (valid for x in [0, 1]); logits [S*B, D] sample-major, x [B, D]."""
    logits = _by_sample(logits, tf.shape(x)[0])
    return tf.reshape(tf.reduce_sum(x * logits - softplus_by_log(logits), -1), [-1])


def _bernoulli_log_likelihood_unfused(logits, x):
    """`_bernoulli_log_likelihood` as TF ops: x . l as one einsum kernel instead of a
    broadcast product and a pass of its own, then softplus and its sum."""
    x_dot_logits = tf.einsum("sbd,bd->sb", _by_sample(logits, tf.shape(x)[0]), x)
    return tf.reshape(x_dot_logits, [-1]) - tf.reduce_sum(tf.nn.softplus(logits), -1)


def _gaussian_log_likelihood(pre_activation, x, floor):
    """sum_d log N(x_d; mean_d, var_d) per row [S*B] from the observation head's
    pre-activation [S*B, 2D]; x [B, D]."""
    mean, var = layers.gaussian_parameters(pre_activation, floor)
    batch_size = tf.shape(x)[0]
    log_prob = gaussian_math.gaussian_log_prob(x, _by_sample(mean, batch_size),
                                               _by_sample(var, batch_size))
    return tf.reshape(tf.reduce_sum(log_prob, -1), [-1])


_XLA_COMPILED = {}


def _compiled(function, fused):
    """`function`, or (fused) its XLA-compiled copy, compiled once per input shape."""
    if not fused:
        return function
    if function not in _XLA_COMPILED:
        _XLA_COMPILED[function] = tf.function(function, jit_compile=True,
                                              reduce_retracing=True)
    return _XLA_COMPILED[function]


# ---- The passes.
def _draw_top(prepared, num_samples, seed, layer):
    """The first draw, z ~ N(mean, std^2) of the per-example statistics tiled over samples;
    returns (z, eps)."""
    stats = prepared.stats
    mean = _tile(stats["mean"], num_samples)
    eps = noise.layer_normal(tf.shape(mean), seed, layer, mean.dtype)
    return mean + _tile(stats["std"], num_samples) * eps, eps


def _lvae_latents(model, prepared, num_samples, seed, fused):
    """z_1 [S*B, D_1] and sum_i log p(z_i|z_{i+1}) - log q(z_i|.) [S*B] for the LVAE."""
    stats, weights = prepared.stats, prepared.weights
    num_layers = model.spec.num_layers
    z, eps = _draw_top(prepared, num_samples, seed, num_layers - 1)
    # top layer: log N(z; 0, 1) - log N(z; mean, var) = 0.5 (eps^2 - z^2 + log var)
    log_ratio = (0.5 * tf.reduce_sum(tf.square(eps) - tf.square(z), -1)
                 + 0.5 * _tile(stats["sum_log_var"], num_samples))
    shared = model.spec.share_top_down
    layer_terms = _compiled(_lvae_layer_terms if shared else _lvae_unshared_layer_terms, fused)
    for i in reversed(range(num_layers - 1)):
        head = model.down_heads[i]
        pre_activations = [_affine(weights["down_heads"][i], model.down_mlps[i]
                                   .apply_inference_weights(weights["down"][i], z))]
        if not shared:  # the merge's top-down network, then the prior
            pre_activations.insert(0, _affine(
                weights["inference_down_heads"][i], model.inference_down_mlps[i]
                .apply_inference_weights(weights["inference_down"][i], z)))
        eps = noise.layer_normal([tf.shape(z)[0], head.units], seed, i,
                                 pre_activations[0].dtype)
        z, term = layer_terms(*pre_activations, *stats["lower"][i], eps, head.variance_floor)
        log_ratio += term
    return z, log_ratio


def _vae_latents(model, prepared, num_samples, seed, fused):
    """z_1 and the log ratio for the bottom-up VAE: q(z_i | z_{i-1}), then the priors."""
    stats, weights = prepared.stats, prepared.weights
    num_layers = model.spec.num_layers
    z, eps = _draw_top(prepared, num_samples, seed, 0)
    zs = [z]
    # -log q(z_1 | x) without log 2pi: 0.5 (eps^2 + log var)
    log_ratio = 0.5 * (tf.reduce_sum(tf.square(eps), -1)
                       + _tile(stats["sum_log_var"], num_samples))
    draw_terms = _compiled(_gaussian_draw_terms, fused)
    for i in range(1, num_layers):
        head = model.up_heads[i]
        pre_activation = _affine(weights["up_heads"][i], model.up_mlps[i]
                                 .apply_inference_weights(weights["up"][i], zs[-1]))
        eps = noise.layer_normal([tf.shape(pre_activation)[0], head.units], seed, i,
                                 pre_activation.dtype)
        z, minus_log_q = draw_terms(pre_activation, eps, head.variance_floor)
        zs.append(z)
        log_ratio += minus_log_q
    log_ratio -= 0.5 * tf.reduce_sum(tf.square(zs[-1]), -1)   # log p(z_L), N(0, I)
    log_density = _compiled(_gaussian_log_density, fused)
    for i in range(num_layers - 1):
        head = model.down_heads[i]
        pre_activation = _affine(weights["down_heads"][i], model.down_mlps[i]
                                 .apply_inference_weights(weights["down"][i], zs[i + 1]))
        log_ratio += log_density(pre_activation, zs[i], head.variance_floor)
    return zs[0], log_ratio


@tf.function(jit_compile=True, reduce_retracing=True)
def _vae_latents_xla(model, prepared, num_samples, seed):
    """`_vae_latents` as one XLA function (num_samples a Python int)."""
    return _vae_latents(model, prepared, num_samples, seed, fused=False)


def _log_likelihood(model, prepared, x, z1, fused):
    """log p(x | z_1) summed over pixels [S*B]; x [B, D_x] broadcast over the samples."""
    features = model.decoder_mlp.apply_inference_weights(prepared.weights["decoder"], z1)
    if model.spec.likelihood == "bernoulli":
        logits = _dense(model.observation.logits, features)
        x = tf.cast(x, logits.dtype)
        if fused:
            return _compiled(_bernoulli_log_likelihood, True)(logits, x)
        return _bernoulli_log_likelihood_unfused(logits, x)
    head = model.observation.head
    pre_activation = _dense(head.dense, features)
    return _compiled(_gaussian_log_likelihood, fused)(
        pre_activation, tf.cast(x, pre_activation.dtype), head.variance_floor)


def log_weights(model, x, num_samples, prepared=None, seed=None, fused=False):
    """Importance log weights [K, B] of flattened x [B, D_x] in inference mode.

    num_samples (K): Python int or int32 scalar tensor. prepared: `prepare(model, x)`, to
    share the per-example work between chunks. seed: the posterior noise, None (the global
    RNG), `noise.Seeded(seed, algorithm)` or a bare int32 seed (the default generator); a
    seeded call draws what `model.log_weights(x, K, seed=seed)` does.
    fused: run the elementwise work between matmuls XLA-compiled (for a CPU graph, whose
    oneDNN matmuls beat XLA's; pointless inside an XLA function, which fuses it anyway).
    """
    if prepared is None:
        prepared = prepare(model, x)
    seed = noise.seeded(seed)
    if model.spec.inference == "lvae":
        z1, log_ratio = _lvae_latents(model, prepared, num_samples, seed, fused)
    elif fused and seed is not None and seed.algorithm == noise.BOX_MULLER:
        # The VAE's q and p passes hold twice the LVAE's small matmuls (widths 4-256), and
        # the pass as one XLA function is faster there; the LVAE's top-down pass as one was
        # slower (docs/PERFORMANCE.md). Box-Muller draws the same numbers in XLA as in the
        # graph.
        z1, log_ratio = _vae_latents_xla(model, prepared, num_samples, seed)
    else:
        z1, log_ratio = _vae_latents(model, prepared, num_samples, seed, fused)
    log_px = _log_likelihood(model, prepared, x, z1, fused)
    return tf.reshape(log_px + log_ratio, [num_samples, -1])
