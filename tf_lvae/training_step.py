"""The custom Keras train/test steps: KL warm-up and multi-sample (MC x IW) objectives.

Training maximises eq. 6 with S Monte-Carlo and K importance samples per example,
    L = 1/S sum_s log 1/K sum_k w_sk,  log w = log p(x|z) + beta (log p(z) - log q(z|x)),
and for K = 1 uses the analytic per-layer KL instead (lower variance):
    L = 1/S sum_s [log p(x|z_s) - beta * sum_i KL_i].
beta rises linearly from 0 to 1 over the warm-up steps (the paper's N_t epochs).
"""
import keras
import tensorflow as tf

from tf_lvae import bounds
from tf_lvae.metrics import ActiveUnits


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


class TrainStepMixin:
    """Adds the LVAE objective's train_step / test_step and metrics to a HierarchicalVAE."""

    mc_samples = 1
    iw_samples = 1
    warmup_steps = 0

    def configure_objective(self, mc_samples=1, iw_samples=1, warmup_steps=0):
        if mc_samples < 1 or iw_samples < 1 or warmup_steps < 0:
            raise ValueError("mc_samples and iw_samples must be >= 1 and warmup_steps >= 0, got "
                             f"{mc_samples}, {iw_samples}, {warmup_steps}")
        self.mc_samples, self.iw_samples = int(mc_samples), int(iw_samples)
        self.warmup_steps = int(warmup_steps)

    def _build_trackers(self):
        num_layers = self.spec.num_layers
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "elbo", "log_px", "kl", "beta")}
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

    def _record(self, terms, objective, beta):
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
        return {m.name: m.result() for m in self.metrics}

    @staticmethod
    def _images(data):
        return data[0] if isinstance(data, (tuple, list)) else data

    def train_step(self, data):
        x = self.flatten_images(self._images(data))
        beta = warmup_beta(self.optimizer.iterations, self.warmup_steps)
        with tf.GradientTape() as tape:
            terms = self.evaluate_terms(x, self.mc_samples * self.iw_samples, training=True)
            objective = training_objective(terms, self.mc_samples, self.iw_samples, beta)
            loss = -tf.reduce_mean(objective)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._record(terms, objective, beta)

    def test_step(self, data):
        x = self.flatten_images(self._images(data))
        terms = self.evaluate_terms(x, 1, training=False)
        return self._record(terms, training_objective(terms, 1, 1, 1.0), tf.constant(1.0))
