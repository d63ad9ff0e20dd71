"""Training's progress line: the few numbers a person watches, not every logged metric.

Keras' bar prints every metric the step returns (about 20 here: per-layer KL, active units,
skipped steps, their val_ twins). TensorBoard and the History keep all of them; the bar shows
the objective, the ELBO, the KL, beta and the validation ELBO.
"""
import keras

SHOWN = ("loss", "elbo", "kl", "beta", "val_elbo")


def _few(logs):
    return {name: logs[name] for name in SHOWN if logs and name in logs}


class FewMetricsProgbar(keras.callbacks.ProgbarLogger):
    """keras.callbacks.ProgbarLogger over the `SHOWN` metrics only (fit uses it instead of its
    own bar when it is in the callbacks)."""

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, _few(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, _few(logs))
