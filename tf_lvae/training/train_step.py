"""The custom Keras train/test steps: KL warm-up and multi-sample (MC x IW) objectives.

Training maximises eq. 6 with S Monte-Carlo and K importance samples per example,
    L = 1/S sum_s log 1/K sum_k w_sk,  log w = log p(x|z) + beta (log p(z) - log q(z|x)),
and for K = 1 uses the analytic per-layer KL instead (lower variance):
    L = 1/S sum_s [log p(x|z_s) - beta * sum_i KL_i].
beta rises linearly from 0 to 1 over the warm-up steps (the paper's N_t epochs).

Under a tf.distribute strategy each replica's loss is divided by the number of replicas (the
optimizer sums their gradients). A step whose loss or gradients are not finite on any replica
changes nothing (weights, optimizer state, BatchNorm statistics, metrics) and is counted in
the `skipped_steps` metric (under mixed_float16 the loss is scaled by Keras'
LossScaleOptimizer, which skips such steps itself and lowers its scale). With a noise seed
set, the posterior noise of a step is a pure function of (seed, optimizer step, replica), so
a resumed run draws what an uninterrupted one did (its generator: `noise.algorithm`).
"""
import keras
import tensorflow as tf

from tf_lvae.model import bounds
from tf_lvae.training import distribute
from tf_lvae.training import gradient_clipping
from tf_lvae.model import noise
from tf_lvae.fast import step_loop
from tf_lvae.model.active_units import ActiveUnits
from tf_lvae.model.hierarchical_vae import HierarchicalVAE


def warmup_beta(step, warmup_steps):
    """KL weight at a 0-based optimizer step: linear 0 -> 1 over warmup_steps (0 disables)."""
    if warmup_steps <= 0:
        return tf.constant(1.0)
    return tf.minimum(1.0, tf.cast(step, tf.float32) / float(warmup_steps))


def training_objective(terms, mc_samples, iw_samples, beta):
    """Per-example objective [B] from `HierarchicalVAE.evaluate_terms` over S*K samples."""
    total_kl = tf.add_n([tf.reduce_sum(kl, axis=-1) for kl in terms["kl_per_unit"]])
    if iw_samples == 1:
        per_sample = terms["log_px"] - beta * total_kl
        return tf.reduce_mean(tf.reshape(per_sample, [mc_samples, -1]), axis=0)
    log_weights = terms["log_px"] + beta * terms["log_pz_minus_log_qz"]
    return bounds.importance_weighted_objective(
        tf.reshape(log_weights, [mc_samples, iw_samples, -1]))


def build_model(spec, precision=None):
    """A TrainableVAE of `spec` with every weight created (`HierarchicalVAE.from_spec`)."""
    return TrainableVAE.from_spec(spec, precision)


# Registered under the name the model had before training moved out of it, so .keras files
# saved then load as this class.
@keras.saving.register_keras_serializable(package="tf_lvae", name="HierarchicalVAE")
class TrainableVAE(HierarchicalVAE):
    """A HierarchicalVAE with the LVAE objective's train_step / test_step and metrics.

    `configure_objective` sets the samples, warm-up, noise seed and clipping; they are part of
    its Keras config, so `model.save("x.keras")` keeps them.
    """

    mc_samples = 1
    iw_samples = 1
    warmup_steps = 0
    noise_seed = None  # None: posterior noise from the global RNG (not reproducible on resume)
    clip_global_norm = 0.0  # the authors' gradient clipping (gradient_clipping.py); 0: off
    clip_value = 0.0

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self._build_trackers()

    def get_config(self):
        config = super().get_config()
        config.update(objective=self.objective_config())
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        objective = config.pop("objective", None)
        model = cls(**config)
        if objective:
            model.configure_objective(**objective)
        return model

    def configure_objective(self, mc_samples=1, iw_samples=1, warmup_steps=0, noise_seed=None,
                            clip_global_norm=0.0, clip_value=0.0):
        if mc_samples < 1 or iw_samples < 1 or warmup_steps < 0:
            raise ValueError("mc_samples and iw_samples must be >= 1 and warmup_steps >= 0, got "
                             f"{mc_samples}, {iw_samples}, {warmup_steps}")
        if clip_global_norm < 0 or clip_value < 0:
            raise ValueError("clip_global_norm and clip_value must be >= 0 (0: off), got "
                             f"{clip_global_norm}, {clip_value}")
        self.mc_samples, self.iw_samples = int(mc_samples), int(iw_samples)
        self.warmup_steps = int(warmup_steps)
        self.noise_seed = None if noise_seed is None else int(noise_seed)
        self.clip_global_norm, self.clip_value = float(clip_global_norm), float(clip_value)

    def objective_config(self):
        """The `configure_objective` arguments in use (part of the model's Keras config)."""
        return dict(mc_samples=self.mc_samples, iw_samples=self.iw_samples,
                    warmup_steps=self.warmup_steps, noise_seed=self.noise_seed,
                    clip_global_norm=self.clip_global_norm, clip_value=self.clip_value)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=None, **kwargs):
        """Keras' fit; `shuffle` defaults to True for arrays and to off for a tf.data input.

        Keras' own default (True) makes every fit on a tf.data pipeline warn that shuffle is
        ignored; such a pipeline shuffles itself (`.shuffle(buffer)`), so only arrays get it.
        """
        if shuffle is None:
            shuffle = not isinstance(x, (tf.data.Dataset, tf.distribute.DistributedDataset))
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                           callbacks=callbacks, validation_split=validation_split,
                           validation_data=validation_data, shuffle=shuffle, **kwargs)

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if step_loop.applies(self):   # several steps per XLA call
            self.train_function = step_loop.fused_train_function(self, self.train_function)
        return self.train_function

    def _build_trackers(self):
        num_layers = self.spec.num_layers
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "elbo", "log_px", "kl", "beta")}
        self.trackers["skipped_steps"] = keras.metrics.Sum(name="skipped_steps")
        for i in range(num_layers):
            self.trackers[f"kl_{i + 1}"] = keras.metrics.Mean(name=f"kl_{i + 1}")
        self.active_unit_trackers = [
            ActiveUnits(size, name=f"active_units_{i + 1}")
            for i, size in enumerate(self.spec.latent_sizes)]

    @property
    def metrics(self):
        if not hasattr(self, "trackers"):
            return []
        return list(self.trackers.values()) + list(self.active_unit_trackers)

    def _update_metrics(self, terms, objective, beta):
        kl_per_layer = [tf.reduce_sum(kl, axis=-1) for kl in terms["kl_per_unit"]]
        total_kl = tf.add_n(kl_per_layer)
        self.trackers["loss"].update_state(-tf.reduce_mean(objective))
        self.trackers["elbo"].update_state(tf.reduce_mean(terms["log_px"] - total_kl))
        self.trackers["log_px"].update_state(tf.reduce_mean(terms["log_px"]))
        self.trackers["kl"].update_state(tf.reduce_mean(total_kl))
        self.trackers["beta"].update_state(beta)
        for i, (kl, kl_units) in enumerate(zip(kl_per_layer, terms["kl_per_unit"])):
            self.trackers[f"kl_{i + 1}"].update_state(tf.reduce_mean(kl))
            self.active_unit_trackers[i].update_state(kl_units)

    def _record(self, terms, objective, beta):
        self._update_metrics(terms, objective, beta)
        return self._step_results()

    def _step_results(self):
        return distribute.step_logs({m.name: m.result() for m in self.metrics})

    @staticmethod
    def _images(data):
        return data[0] if isinstance(data, (tuple, list)) else data

    def _posterior_noise(self, offset, counter):
        """The posterior noise of one step: None without a noise seed (the global RNG), else
        stateless from (noise_seed + offset, counter, replica), drawn with Threefry in an
        XLA-compiled step and the default generator otherwise (`noise.algorithm`)."""
        if self.noise_seed is None:
            return None
        return noise.Seeded(distribute.replica_seed(self.noise_seed + offset, counter),
                            noise.algorithm(self.jit_compile))

    def train_step(self, data):
        x = self.flatten_images(self._images(data))
        step = self.optimizer.iterations
        beta = warmup_beta(step, self.warmup_steps)
        # The forward pass updates BatchNorm's moving statistics: keep them for a skipped step.
        saved_statistics = [tf.identity(v) for v in self.non_trainable_weights]
        with tf.GradientTape() as tape:
            terms = self.evaluate_terms(x, self.mc_samples * self.iw_samples, training=True,
                                        seed=self._posterior_noise(0, step))
            objective = training_objective(terms, self.mc_samples, self.iw_samples, beta)
            loss = -tf.reduce_mean(objective)
            # The optimizer sums the replicas' gradients: 1/R makes it the global mean's.
            replica_loss = loss / distribute.num_replicas()
            loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
            if loss_scaled:  # mixed_float16
                replica_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        finite = distribute.all_replicas_true(distribute.all_finite([loss, *gradients]))
        gradients = gradient_clipping.clip_global_gradients(
            gradients, self.clip_global_norm, self.clip_value,
            self.optimizer.dynamic_scale if loss_scaled else 1.0)
        if loss_scaled:
            # It skips non-finite steps itself, and must see them to lower its loss scale.
            self.optimizer.apply(gradients, self.trainable_variables)
        else:
            distribute.apply_gradients_if(finite, self.optimizer, gradients,
                                          self.trainable_variables)
        distribute.settle_statistics(finite, self.non_trainable_weights, saved_statistics)
        tf.cond(finite, lambda: self._update_metrics(terms, objective, beta), lambda: None)
        self.trackers["skipped_steps"].update_state(
            distribute.on_first_replica(1.0 - tf.cast(finite, tf.float32)))
        return self._step_results()

    def test_step(self, data):
        x = self.flatten_images(self._images(data))
        # With a noise seed, batch b of an evaluation draws from (seed, b): the metrics of
        # given weights do not depend on what ran before (e.g. on a resumed run).
        terms = self.evaluate_terms(x, 1, training=False,
                                    seed=self._posterior_noise(1, self.trackers["loss"].count))
        return self._record(terms, training_objective(terms, 1, 1, 1.0), tf.constant(1.0))
