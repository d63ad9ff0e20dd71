"""Layer-wise generation: per-layer temperatures, "keep the top, redraw below", interpolation.

What does each stochastic layer of a hierarchical VAE encode? Three ways to look, all written
against the model's public methods (`encode`, `top_prior`, `prior_given_parent`, `decode`):

  sample(model, seeds, temperature)        z_L ~ N(0, t_L^2 I), z_i ~ N(mu_p_i, t_i^2 var_p_i)
                                           given z_{i+1}: ancestral sampling with a temperature
                                           per row and layer (0 = the prior mean).
  keep_top(model, images, layer, seeds)    z_k..z_L from the posterior of the images (its means,
                                           propagated top-down as `encode` serves them), z_i for
                                           i < k redrawn from p(z_i | z_{i+1}): how much of the
                                           image layers k..L hold. k = 1 is the reconstruction.
  interpolate(model, a, b, layer, weight)  layers above k: image a's posterior means; layer k:
                                           (1 - w) mean_a + w mean_b; layers below k: the prior
                                           means given the layer above. w = 0 at k = 1 is a's
                                           reconstruction and w = 1 b's (z_1 alone decides x).

`keep_top_grid` and `interpolation_grid` run them for every layer at once (what `analyze`
draws). Every draw is seeded per row: row r's noise in layer i is a pure function of (seeds[r], i)
(`row_noise`), so a row's image does not depend on the other rows of the batch and the same
seed gives the same image. It is the first row of `HierarchicalVAE.sample(n, t, seed)`'s noise,
so `sample(model, [s], t)` equals `model.sample(1, t, s)`. BatchNorm runs in inference mode.

Shapes: B rows, L layers, D_i units in layer i (bottom first), images [B, h, w, c] in [0, 1]
(Bernoulli probabilities or Gaussian means). Layer numbers are 1-based: 1 is z_1, next to x.
Temperatures: a scalar, [B] (per row) or [B, L] / [1, L] (per row and layer, column i-1 is
z_i). Arguments are checked in the graph (InvalidArgumentError); `tf_lvae.serving` adds the
request checks of the serving signatures (shapes, dtypes, caps, temperature > 0).
"""
import tensorflow as tf

from tf_lvae.model import layers
from tf_lvae.model import noise


def row_noise(seeds, latent_sizes):
    """Standard-normal noise per layer, row r's from (seeds[r], layer) only: [[B, D_i]].

    seeds: int32 [B]. Each row draws `noise.standard_normal([1, D_i], seed=[seed, i])`, the
    noise `HierarchicalVAE.sample` draws for its first row, so a row's noise is the same
    in any batch.
    """
    seeds = tf.cast(tf.convert_to_tensor(seeds), tf.int32)

    def one_row(seed):
        return tuple(noise.standard_normal([1, size], tf.stack([seed, i]))[0]
                     for i, size in enumerate(latent_sizes))

    signature = tuple(tf.TensorSpec([size], tf.float32) for size in latent_sizes)
    return list(tf.map_fn(one_row, seeds, fn_output_signature=signature))


def layer_temperatures(temperature, batch_size, num_layers):
    """A temperature as float32 [B, L]: from a scalar, per row [B], or [B, L] / [1, L].

    Asserted finite and >= 0 (0 propagates the prior means).
    """
    temperature = tf.cast(tf.convert_to_tensor(temperature), tf.float32)
    if temperature.shape.rank is None or temperature.shape.rank > 2:
        raise ValueError(f"temperature must be a scalar, [batch] or [batch, {num_layers}], "
                         f"got shape {temperature.shape}")
    if temperature.shape.rank == 1:
        temperature = temperature[:, None]
    checks = [tf.debugging.assert_greater_equal(  # NaN fails this too
        temperature, 0.0, message="temperature must be finite and >= 0"),
        tf.debugging.assert_all_finite(temperature, "temperature must be finite and >= 0")]
    with tf.control_dependencies(checks):
        return tf.broadcast_to(temperature, tf.stack([batch_size, num_layers]))


def _checked_layer(layer, batch_size, num_layers):
    """A 1-based layer number, scalar or [B], as int32 [B], asserted to lie in [1, L]."""
    layer = tf.cast(tf.convert_to_tensor(layer), tf.int32)
    checks = [tf.debugging.assert_greater_equal(
        layer, 1, message=f"layer must be in [1, {num_layers}] (1 = z_1, next to the image)"),
        tf.debugging.assert_less_equal(
        layer, num_layers,
        message=f"layer must be in [1, {num_layers}] (1 = z_1, next to the image)")]
    with tf.control_dependencies(checks):
        return tf.broadcast_to(layer, [batch_size])


def posterior_means(model, images):
    """The deterministic posterior of images [B, h, w, c]: [[B, D_i]] bottom first (the means
    propagated top-down, what `encode` serves)."""
    return [mean for mean, _ in model.encode(images)]


def top_down(model, noises, temperatures, kept=None, keep_from=None):
    """Images [B, h, w, c] from ancestral sampling, optionally keeping given upper layers.

    noises: [[B, D_i]] standard normal, bottom first. temperatures: [B, L]. kept: [[B, D_i]]
    or None. keep_from: int32 [B], 1-based: row r takes z_i = kept[i-1] for i >= keep_from[r]
    and draws z_i ~ p(z_i | z_{i+1}) at its temperature below.
    """
    num_layers = model.spec.num_layers

    def layer_value(i, prior):
        drawn = prior.loc + temperatures[:, i:i + 1] * prior.scale * noises[i]
        if kept is None:
            return drawn
        return tf.where((keep_from <= i + 1)[:, None], kept[i], drawn)

    z = layer_value(num_layers - 1, model.top_prior(tf.shape(noises[-1])[0]))
    for i in reversed(range(num_layers - 1)):
        z = layer_value(i, model.prior_given_parent(i, z))
    pixels = layers.observation_mean(model.decode(z))
    return tf.reshape(pixels, [-1, *model.spec.image_shape])


def sample(model, seeds, temperature=1.0):
    """Prior samples [B, h, w, c], row r from seeds[r] (int32 [B]).

    temperature: scalar, [B] or [B, L] / [1, L] (per layer, z_1 first); 0 in every layer gives
    the prior-mean image. Row r equals `model.sample(1, t, seeds[r])` at a scalar t.
    """
    seeds = tf.convert_to_tensor(seeds, tf.int32)
    batch_size = tf.shape(seeds)[0]
    temperatures = layer_temperatures(temperature, batch_size, model.spec.num_layers)
    return top_down(model, row_noise(seeds, model.spec.latent_sizes), temperatures)


def keep_top(model, images, layer, seeds, temperature=1.0):
    """Keep the posterior of layers k..L of each image, redraw the layers below: [B, h, w, c].

    images [B, h, w, c]; layer k: int or int32 [B] in [1, L]; seeds int32 [B] (the redraws:
    row r's noise from seeds[r] as in `sample`); temperature as in `sample` (only the layers
    below k use it). k = 1 redraws nothing: the posterior-mean reconstruction.
    """
    seeds = tf.convert_to_tensor(seeds, tf.int32)
    batch_size = tf.shape(seeds)[0]
    num_layers = model.spec.num_layers
    kept = posterior_means(model, images)
    with tf.control_dependencies([tf.debugging.assert_equal(
            tf.shape(kept[0])[0], batch_size, message="seeds must have one row per image")]):
        keep_from = _checked_layer(layer, batch_size, num_layers)
    temperatures = layer_temperatures(temperature, batch_size, num_layers)
    return top_down(model, row_noise(seeds, model.spec.latent_sizes), temperatures, kept,
                    keep_from)


def interpolate(model, images_a, images_b, layer, weight):
    """Images [B, h, w, c] between a and b in the posterior of layer k, the rest fixed.

    images_a, images_b: [B, h, w, c]; layer k: int or int32 [B] in [1, L]; weight w: float or
    float32 [B] in [0, 1]. Layers above k: a's posterior means; layer k: (1 - w) mean_a +
    w mean_b (b's posterior mean in b's own top-down pass); layers below k: the prior means
    given the layer above (no noise: a path of weights is smooth and deterministic).
    """
    means_a, means_b = posterior_means(model, images_a), posterior_means(model, images_b)
    batch_size = tf.shape(means_a[0])[0]
    num_layers = model.spec.num_layers
    weight = tf.cast(tf.convert_to_tensor(weight), tf.float32)
    checks = [tf.debugging.assert_equal(
        tf.shape(means_b[0])[0], batch_size,
        message="images_b must have the batch size of images_a"),
        tf.debugging.assert_greater_equal(weight, 0.0, message="weight must be in [0, 1]"),
        tf.debugging.assert_less_equal(weight, 1.0, message="weight must be in [0, 1]")]
    with tf.control_dependencies(checks):
        layer = _checked_layer(layer, batch_size, num_layers)
        weight = tf.broadcast_to(weight, [batch_size])[:, None]
    kept = []
    for i, (mean_a, mean_b) in enumerate(zip(means_a, means_b)):
        mixed = (1.0 - weight) * mean_a + weight * mean_b
        kept.append(tf.where((layer == i + 1)[:, None], mixed, mean_a))
    zeros = [tf.zeros_like(mean) for mean in means_a]
    temperatures = tf.zeros([batch_size, num_layers])
    return top_down(model, zeros, temperatures, kept, layer)


def _grid(count, num_layers, num_columns):
    """Flat (image, layer, column) indices of an [N, L, C] grid, row-major: three int32 [N*L*C]."""
    image, layer, column = tf.meshgrid(tf.range(count), tf.range(1, num_layers + 1),
                                       tf.range(num_columns), indexing="ij")
    return [tf.reshape(index, [-1]) for index in (image, layer, column)]


def keep_top_grid(model, images, num_redraws, seed=0, temperature=1.0):
    """`keep_top` of every image at every layer k = 1..L, num_redraws times: [N, L, R, h, w, c].

    images [N, h, w, c]. Redraw r uses seed + r at every k, so down a column the layers below
    k are drawn from the same noise and only what is kept changes.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = [images.shape[0], model.spec.num_layers, num_redraws]
    image, layer, redraw = _grid(*shape)
    redrawn = keep_top(model, tf.gather(images, image), layer, seed + redraw, temperature)
    return tf.reshape(redrawn, [*shape, *model.spec.image_shape])


def interpolation_grid(model, images_a, images_b, num_steps):
    """`interpolate` from each a to its b in every layer k = 1..L: [N, L, S, h, w, c], step s
    at weight s / (S - 1)."""
    images_a = tf.convert_to_tensor(images_a, tf.float32)
    shape = [images_a.shape[0], model.spec.num_layers, num_steps]
    image, layer, step = _grid(*shape)
    weight = tf.cast(step, tf.float32) / max(num_steps - 1, 1)
    between = interpolate(model, tf.gather(images_a, image), tf.gather(images_b, image), layer,
                          weight)
    return tf.reshape(between, [*shape, *model.spec.image_shape])
