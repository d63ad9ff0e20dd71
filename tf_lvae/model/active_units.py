"""Keras metrics specific to hierarchical VAEs."""
import keras
import tensorflow as tf

ACTIVE_UNIT_THRESHOLD = 0.01  # nats; a unit whose average KL exceeds this is "active"


class ActiveUnits(keras.metrics.Metric):
    """Number of latent units of one layer whose KL, averaged over all seen rows, > 0.01 nats.

    Accumulates the per-unit KL sum over a whole epoch (not per batch), so the count is the
    epoch-level statistic the paper reports.
    """

    def __init__(self, num_units, threshold=ACTIVE_UNIT_THRESHOLD, name="active_units",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_units, self.threshold = num_units, threshold
        self.kl_sum = self.add_variable(shape=(num_units,), initializer="zeros", name="kl_sum")
        self.rows = self.add_variable(shape=(), initializer="zeros", name="rows")

    def update_state(self, kl_per_unit, sample_weight=None):
        """kl_per_unit: [N, num_units] per-row KL of every unit."""
        kl_per_unit = tf.convert_to_tensor(kl_per_unit, tf.float32)
        self.kl_sum.assign_add(tf.reduce_sum(kl_per_unit, axis=0))
        self.rows.assign_add(tf.cast(tf.shape(kl_per_unit)[0], tf.float32))

    def mean_kl_per_unit(self):
        return self.kl_sum / tf.maximum(self.rows, 1.0)

    def result(self):
        return tf.reduce_sum(tf.cast(self.mean_kl_per_unit() > self.threshold, tf.float32))

    def reset_state(self):
        self.kl_sum.assign(tf.zeros([self.num_units]))
        self.rows.assign(0.0)
