"""One hierarchical generative model with two inference models: the bottom-up VAE and the LVAE.

Generative model (shared):  p(z_L) = N(0, I),  p(z_i | z_{i+1}) = N(mu_p_i, var_p_i),
p(x | z_1) Bernoulli or Gaussian. Inference:
  * VAE (eqs 7-9):   q(z_1 | x), q(z_i | z_{i-1}), each a Gaussian MLP head.
  * LVAE (eqs 13-19): a deterministic upward pass d_i = MLP(d_{i-1}) gives
    (mu_hat_i, var_hat_i); the downward pass samples z_L ~ N(mu_hat_L, var_hat_L) and then
    each z_i from the precision-weighted merge of (mu_hat_i, var_hat_i) with p(z_i | z_{i+1}).

Samples are folded into the batch dimension, sample-major: a tensor for S samples of B
examples is [S * B, D], row s * B + b. The bottom-up statistics of the LVAE (and q(z_1|x) of
the VAE) depend on x only and are computed once per example, then tiled over samples.
Keras' train/test steps (warm-up, MC and IW samples) are added by
`tf_lvae.training.train_step.TrainableVAE`; this module knows nothing of training.
"""
import collections
import dataclasses

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_lvae.model import gaussian_math
from tf_lvae.model import layers
from tf_lvae.model import noise
from tf_lvae.model.spec import ModelSpec

tfd = tfp.distributions

# One stochastic layer of a posterior draw: its sample, q(z_i | .) and p(z_i | z_{i+1}).
LayerDraw = collections.namedtuple("LayerDraw", ["z", "posterior", "prior"])


def tile_samples(tensor, num_samples):
    """[B, D] -> [num_samples * B, D], sample-major."""
    return tf.tile(tensor, [num_samples, 1])


def _draw(distribution, deterministic, seed, layer):
    """z of 0-based latent layer `layer`: the mean, or a draw with `noise.layer_normal` eps."""
    if deterministic:
        return distribution.loc
    eps = noise.layer_normal(tf.shape(distribution.loc), seed, layer)
    return distribution.loc + distribution.scale * eps  # reparameterisation trick


@keras.saving.register_keras_serializable(package="tf_lvae.model")
class HierarchicalVAE(keras.Model):
    """Ladder VAE (spec.inference='lvae') or bottom-up VAE ('vae') over one generative model.

    `model.save("x.keras")` / `keras.models.load_model("x.keras")` round-trip it: the config
    is the ModelSpec, the weights every layer's. It has no train step: `fit` needs the
    `TrainableVAE` subclass (`tf_lvae.build_model`).
    """

    @classmethod
    def from_spec(cls, spec, precision=None):
        """A model of this class with every weight created (called once on a zero batch).

        precision: a Keras dtype policy of `spec.PRECISIONS`, or None for Keras' global
        policy. Weights are float32 under every policy, so a checkpoint of a mixed-precision
        run restores into a float32 model.
        """
        with layers.global_dtype_policy(precision):
            model = cls(spec)
            model(tf.zeros([1, *spec.image_shape]))
        return model

    def __init__(self, spec: ModelSpec, **kwargs):
        if isinstance(spec, dict):   # from get_config, via keras.models.load_model
            spec = ModelSpec(**spec)
        super().__init__(**kwargs)
        self.spec = spec
        mlp = dict(activation=spec.activation, batch_norm=spec.batch_norm,
                   leaky_relu_slope=spec.leaky_relu_slope)
        head = dict(variance_floor=spec.variance_floor, batch_norm=spec.batch_norm_heads)
        floor = spec.variance_floor
        latent, hidden = spec.latent_sizes, spec.hidden_sizes
        num_layers = spec.num_layers
        # Upward path: LVAE d_i = MLP(d_{i-1}) (d_0 = x); VAE q(z_i | z_{i-1}) (z_0 = x).
        self.up_mlps = [layers.MLPBlock(hidden[i], **mlp, name=f"up_mlp_{i + 1}")
                        for i in range(num_layers)]
        self.up_heads = [layers.GaussianHead(latent[i], **head, name=f"up_head_{i + 1}")
                         for i in range(num_layers)]
        # Generative p(z_i | z_{i+1}) for i = 1..L-1, MLP width of the connection above z_i
        # (of z_i itself beside a separate inference top-down network, as the authors').
        prior_width = [hidden[i + 1] if spec.share_top_down else hidden[i]
                       for i in range(num_layers - 1)]
        self.down_mlps = [layers.MLPBlock(prior_width[i], **mlp, name=f"down_mlp_{i + 1}")
                          for i in range(num_layers - 1)]
        self.down_heads = [layers.GaussianHead(latent[i], **head, name=f"down_head_{i + 1}")
                           for i in range(num_layers - 1)]
        # LVAE with share_top_down=False: the top-down (mu_t, var_t) merged in eqs 17-19.
        self.inference_down_mlps, self.inference_down_heads = [], []
        if not spec.share_top_down:
            self.inference_down_mlps = [
                layers.MLPBlock(hidden[i + 1], **mlp, name=f"inference_down_mlp_{i + 1}")
                for i in range(num_layers - 1)]
            self.inference_down_heads = [
                layers.GaussianHead(latent[i], **head, name=f"inference_down_head_{i + 1}")
                for i in range(num_layers - 1)]
        self.decoder_mlp = layers.MLPBlock(hidden[0], **mlp, name="decoder_mlp")
        if spec.likelihood == "bernoulli":
            self.observation = layers.BernoulliObservation(spec.num_pixels, name="observation")
        else:
            self.observation = layers.GaussianObservation(spec.num_pixels, floor,
                                                          name="observation")

    def get_config(self):
        config = super().get_config()
        config.update(spec=dataclasses.asdict(self.spec))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("objective", None)  # a TrainableVAE's training settings
        return cls(**config)

    def build(self, input_shape=None):
        """Create every weight by one pass on zeros (also what keras.models.load_model and
        the first __call__ run)."""
        if not self.built:
            self.call(tf.zeros([1, *self.spec.image_shape]))
        super().build(input_shape)

    # ----------------------------------------------------------------------------- passes
    def flatten_images(self, images):
        """[B, h, w, c] -> [B, h * w * c] float32."""
        return tf.reshape(tf.cast(images, tf.float32), [-1, self.spec.num_pixels])

    def bottom_up(self, x, training=False):
        """Per-example statistics of the upward pass, computed once for all samples.

        LVAE: [N(mu_hat_i, var_hat_i) for i = 1..L], each [B, D_i]. VAE: [q(z_1 | x)].
        """
        if self.spec.inference == "vae":
            return [self.up_heads[0](self.up_mlps[0](x, training=training), training=training)]
        stats, up_input = [], x
        for mlp, head in zip(self.up_mlps, self.up_heads):
            d = mlp(up_input, training=training)
            stats.append(head(d, training=training))
            # eq. 13 feeds d_i upward; the authors' only_mu_up feeds mu_hat_i
            up_input = d if self.spec.upward_input == "hidden" else stats[-1].loc
        return stats

    def prior_given_parent(self, layer, z_parent, training=False):
        """p(z_layer | z_{layer+1}) for 0-based layer < L - 1: tfd.Normal [N, D_layer]."""
        return self.down_heads[layer](self.down_mlps[layer](z_parent, training=training),
                                      training=training)

    def top_down(self, layer, z_parent, prior, training=False):
        """The LVAE's top-down N(mu_t, var_t) merged into q(z_layer | .) (eqs 17-19): the
        generative `prior` itself, or the separate inference network's (share_top_down)."""
        if self.spec.share_top_down:
            return prior
        features = self.inference_down_mlps[layer](z_parent, training=training)
        return self.inference_down_heads[layer](features, training=training)

    def top_prior(self, num_rows):
        """p(z_L) = N(0, I) with batch shape [num_rows, D_L]."""
        zeros = tf.zeros([num_rows, self.spec.latent_sizes[-1]])
        return tfd.Normal(zeros, tf.ones_like(zeros))

    def posterior_draws(self, up_stats, num_samples=1, training=False, deterministic=False,
                        seed=None):
        """Draw z ~ q(z | x) for every layer; returns [LayerDraw] bottom (z_1) to top (z_L).

        Each tensor is [num_samples * B, D_i]. With deterministic=True the means are
        propagated instead of samples (what `encode` serves). seed: the posterior noise, None
        (the global RNG, not reproducible), `noise.Seeded(seed, algorithm)` or a bare int32
        seed (the default generator); layer i's eps is `noise.layer_normal(shape, seed, i)`.
        """
        num_layers = self.spec.num_layers
        if self.spec.inference == "vae":
            return self._bottom_up_draws(up_stats[0], num_samples, training, deterministic, seed)
        top = up_stats[-1]
        posterior = tfd.Normal(tile_samples(top.loc, num_samples),
                               tile_samples(top.scale, num_samples))
        z = _draw(posterior, deterministic, seed, num_layers - 1)
        draws = [LayerDraw(z, posterior, self.top_prior(tf.shape(z)[0]))]
        for i in reversed(range(num_layers - 1)):
            prior = self.prior_given_parent(i, z, training)
            top_down = self.top_down(i, z, prior, training)
            mean_q, var_q = gaussian_math.precision_weighted_merge(   # eqs 17-19
                tile_samples(up_stats[i].loc, num_samples),
                tile_samples(up_stats[i].variance(), num_samples),
                top_down.loc, top_down.variance())
            posterior = tfd.Normal(mean_q, tf.sqrt(var_q))
            z = _draw(posterior, deterministic, seed, i)
            draws.append(LayerDraw(z, posterior, prior))
        return draws[::-1]

    def _bottom_up_draws(self, first_posterior, num_samples, training, deterministic, seed):
        posterior = tfd.Normal(tile_samples(first_posterior.loc, num_samples),
                               tile_samples(first_posterior.scale, num_samples))
        posteriors, zs = [posterior], [_draw(posterior, deterministic, seed, 0)]
        for i in range(1, self.spec.num_layers):
            posterior = self.up_heads[i](self.up_mlps[i](zs[-1], training=training),
                                         training=training)
            posteriors.append(posterior)
            zs.append(_draw(posterior, deterministic, seed, i))
        priors = [self.prior_given_parent(i, zs[i + 1], training)
                  for i in range(self.spec.num_layers - 1)]
        priors.append(self.top_prior(tf.shape(zs[-1])[0]))
        return [LayerDraw(z, q, p) for z, q, p in zip(zs, posteriors, priors)]

    def decode(self, z1, training=False):
        """p(x | z_1) over flattened pixels: tfd.Bernoulli or tfd.Normal [N, h * w * c]."""
        return self.observation(self.decoder_mlp(z1, training=training))

    def call(self, images, training=False):
        """Posterior-mean reconstruction [B, h, w, c] (builds every weight)."""
        draws = self.posterior_draws(self.bottom_up(self.flatten_images(images), training),
                                     training=training, deterministic=True)
        pixels = layers.observation_mean(self.decode(draws[0].z, training))
        return tf.reshape(pixels, [-1, *self.spec.image_shape])

    # ------------------------------------------------------------------- objective terms
    def evaluate_terms(self, x, num_samples=1, training=False, up_stats=None, seed=None):
        """Per-sample terms of both bounds for flattened x [B, D].

        seed: the posterior noise (`posterior_draws`): None, `noise.Seeded` or an int32 seed.

        Returns a dict of tensors over num_samples * B rows:
          log_px:       log p(x | z_1)                        [S * B]
          kl_per_unit:  KL(q(z_i|.) || p(z_i|z_{i+1})) per layer and unit, [[S * B, D_i]]:
                        analytic where the parent z_{i+1} is drawn first (LVAE, top layer),
                        the single-draw log q - log p otherwise (VAE layers below the top)
          log_pz_minus_log_qz: sum_i log p(z_i|z_{i+1}) - log q(z_i|.) at the draws [S * B]
        """
        if up_stats is None:
            up_stats = self.bottom_up(x, training)
        draws = self.posterior_draws(up_stats, num_samples, training, seed=seed)
        log_px = tf.reduce_sum(
            self.decode(draws[0].z, training).log_prob(tile_samples(x, num_samples)), axis=-1)
        kl_per_unit, log_ratio = [], 0.0
        for i, draw in enumerate(draws):
            q, p = draw.posterior, draw.prior
            log_q_minus_log_p = q.log_prob(draw.z) - p.log_prob(draw.z)
            log_ratio -= tf.reduce_sum(log_q_minus_log_p, axis=-1)
            if i == len(draws) - 1:
                kl_per_unit.append(gaussian_math.standard_normal_kl(q.loc, q.variance()))
            elif self.spec.inference == "lvae":
                # z_{i+1} was drawn before z_i, so KL given the sampled parent is exact.
                kl_per_unit.append(
                    gaussian_math.gaussian_kl(q.loc, q.variance(), p.loc, p.variance()))
            else:
                # VAE: the prior's parent z_{i+1} is drawn from q(z_{i+1} | z_i), after and
                # depending on z_i, so an analytic KL given it would be biased: Monte-Carlo.
                kl_per_unit.append(log_q_minus_log_p)
        return dict(log_px=log_px, kl_per_unit=kl_per_unit, log_pz_minus_log_qz=log_ratio)

    def log_weights(self, x, num_samples, up_stats=None, seed=None):
        """Importance log weights log p(x, z_k) - log q(z_k | x) in inference mode: [K, B].

        seed: the posterior noise (`posterior_draws`): None, `noise.Seeded` or an int32 seed.
        """
        terms = self.evaluate_terms(x, num_samples, training=False, up_stats=up_stats,
                                    seed=seed)
        return tf.reshape(terms["log_px"] + terms["log_pz_minus_log_qz"], [num_samples, -1])

    # ------------------------------------------------------------------------ generation
    def encode(self, images):
        """Deterministic posterior per layer (means propagated): [(mean, stddev)] bottom-up."""
        draws = self.posterior_draws(self.bottom_up(self.flatten_images(images)),
                                     deterministic=True)
        return [(draw.posterior.loc, draw.posterior.scale) for draw in draws]

    def decode_noise(self, noises, temperature=1.0):
        """Ancestral sampling from given standard-normal noise per layer (bottom to top).

        noises[i] is [N, D_i]; the prior standard deviations are scaled by temperature.
        Returns the observation mean images [N, h, w, c].
        """
        z = temperature * noises[-1]
        for i in reversed(range(self.spec.num_layers - 1)):
            prior = self.prior_given_parent(i, z)
            z = prior.loc + temperature * prior.scale * noises[i]
        pixels = layers.observation_mean(self.decode(z))
        return tf.reshape(pixels, [-1, *self.spec.image_shape])

    def sample(self, num_samples, temperature=1.0, seed=None):
        """Images from the prior [num_samples, h, w, c]; a fixed seed gives the same images
        (seed as in `posterior_draws`)."""
        noises = [noise.layer_normal([num_samples, size], seed, i)
                  for i, size in enumerate(self.spec.latent_sizes)]
        return self.decode_noise(noises, temperature)
