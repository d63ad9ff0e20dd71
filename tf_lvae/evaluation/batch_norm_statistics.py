"""Population batch-norm statistics: every BatchNorm layer's mean and variance over the training set.

Keras keeps exponential moving averages of the batch statistics (momentum 0.9: about the last
10 batches of training). The authors' code instead recomputes, before every evaluation, each
BatchNorm layer's statistics on the complete training set under the current weights
(`shared/OFFICIAL_CODE.md`, parmesan's NormalizeLayer with `collect=True`). This module does
that, streamed:

  * one pass over the training split as training sees it (shuffled and binarized or
    dequantized with a fixed seed), in training mode: every BatchNorm layer normalizes by its
    batch's statistics, so each layer's input is what the layers below it produce in
    training, at any depth and for both inference models (posterior draws with a fixed seed);
  * per batch b, every layer's batch mean m_b and (biased) variance v_b over its n_b rows;
    pooled in float64 on the host: mean = sum n_b m_b / N, variance = sum n_b (v_b + m_b^2) / N
    - mean^2, the exact mean and variance of all N rows the layer saw.
Memory is one batch's activations. With one batch of the whole split this is the authors'
single full-set pass; `eval.bn_statistics_batch_size` (default 2000) trades memory for closeness
to it (docs/RESULTS.md measures the difference).

The model that is evaluated or exported gets these statistics as its moving mean and variance;
a training checkpoint's own moving averages are never overwritten (`applied` restores them), so
a resumed run is unchanged.
"""
import contextlib
import weakref

import keras
import numpy as np
import tensorflow as tf

from tf_lvae import data
from tf_lvae import experiment_config

MODES = experiment_config.BN_STATISTICS
DEFAULT_MODE = experiment_config.EvalSettings.bn_statistics
DEFAULT_BATCH_SIZE = experiment_config.EvalSettings.bn_statistics_batch_size
DEFAULT_SEED = 0


def batch_norm_layers(model):
    """Every keras BatchNormalization layer of `model`, in a fixed order."""
    # Keras' own recursive walk over nested layers (there is no public one).
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"bn_statistics must be one of {', '.join(MODES)}, got {mode!r}")


_FUNCTIONS = weakref.WeakKeyDictionary()


def _batch_statistics_function(model, norms):
    """One traced training-mode pass per model: images, seed, batch index -> [(mean, var)]."""
    if model not in _FUNCTIONS:
        @tf.function(reduce_retracing=True)
        def batch_statistics(images, seed, index):
            x = model.flatten_images(images)
            batch_seed = tf.random.stateless_uniform(  # posterior noise keyed by (seed, batch)
                [], seed=tf.stack([tf.cast(seed, tf.int32), tf.cast(index, tf.int32)]),
                minval=None, maxval=None, dtype=tf.int32)
            model.evaluate_terms(x, 1, training=True, seed=batch_seed)
            return [(norm.moving_mean.value, norm.moving_variance.value) for norm in norms]
        _FUNCTIONS[model] = batch_statistics
    return _FUNCTIONS[model]


def population_statistics(model, dataset, seed=DEFAULT_SEED):
    """{layer: (mean, variance)} (float64 numpy) of every BatchNorm layer's input over `dataset`.

    dataset: batches of images [B, h, w, c] as training sees them (`training_view`). The
    model's weights, moving averages and momentum are as before when this returns.
    """
    norms = batch_norm_layers(model)
    if not norms:
        return {}
    saved = [(norm.momentum, norm.moving_mean.numpy(), norm.moving_variance.numpy())
             for norm in norms]
    for norm in norms:
        # moving <- moving * 0 + batch * 1: after a forward pass each layer's moving statistics
        # are that batch's (read at trace time, so set before the function is traced; every
        # trace of the cached function sees 0).
        norm.momentum = 0.0
    batch_statistics = _batch_statistics_function(model, norms)

    count = 0
    sums = [None] * len(norms)
    try:
        for index, images in enumerate(dataset):
            rows = int(images.shape[0])
            for i, (mean, variance) in enumerate(batch_statistics(images, tf.constant(seed),
                                                                  tf.constant(index))):
                mean = mean.numpy().astype(np.float64)
                second = variance.numpy().astype(np.float64) + mean ** 2
                if sums[i] is None:
                    sums[i] = [rows * mean, rows * second]
                else:
                    sums[i][0] += rows * mean
                    sums[i][1] += rows * second
            count += rows
    finally:
        for norm, (momentum, mean, variance) in zip(norms, saved):
            norm.momentum = momentum
            norm.moving_mean.assign(mean)
            norm.moving_variance.assign(variance)
    if count == 0:
        raise ValueError("population_statistics needs at least one training example")
    statistics = {}
    for norm, (first, second) in zip(norms, sums):
        mean = first / count
        statistics[norm] = (mean, np.maximum(second / count - mean ** 2, 0.0))
    return statistics


def assign(statistics):
    """Make `statistics` ({layer: (mean, variance)}) the layers' moving mean and variance."""
    for norm, (mean, variance) in statistics.items():
        norm.moving_mean.assign(mean.astype(np.float32))
        norm.moving_variance.assign(variance.astype(np.float32))


def training_view(images, data_spec, batch_size=DEFAULT_BATCH_SIZE, seed=DEFAULT_SEED):
    """The training split as one training epoch sees it (epoch 0 of `seed`), every example."""
    return data.make_dataset(images, data_spec, batch_size, shuffle=True, seed=seed, epoch=0)


@contextlib.contextmanager
def applied(model, statistics):
    """Within the block the model uses `statistics`; its moving averages come back after."""
    norms = list(statistics)
    saved = [(norm.moving_mean.numpy(), norm.moving_variance.numpy()) for norm in norms]
    assign(statistics)
    try:
        yield
    finally:
        for norm, (mean, variance) in zip(norms, saved):
            norm.moving_mean.assign(mean)
            norm.moving_variance.assign(variance)


def for_evaluation(model, experiment, mode=None, data_dir=None):
    """Give `model` the batch-norm statistics `mode` names before it reports or serves numbers.

    experiment: the model_dir's `experiment_config.Experiment` (a config.json dict or ConfigDict
    is resolved first): which data set, training split and data_dir training read. mode:
    'population' (one pass over the training split, `population_statistics`) or 'moving'
    (Keras' moving averages, as trained); None: the experiment's eval.bn_statistics.
    Returns what the model uses: 'population', 'moving', or 'none' (no BatchNorm).
    """
    experiment = experiment_config.resolve(experiment)
    data_settings = experiment.data
    mode = mode or experiment.eval.bn_statistics
    _check_mode(mode)
    if not batch_norm_layers(model):
        return "none"
    if mode == "moving":
        return "moving"
    images, _ = data.load_arrays(data_settings.dataset, data_settings.train_split,
                                 data_dir=data_dir or data_settings.data_dir,
                                 num_validation=data_settings.validation_size)
    if data_settings.max_train_examples > 0:
        images = images[:data_settings.max_train_examples]
    assign(population_statistics(
        model, training_view(images, data.get_spec(data_settings.dataset),
                             experiment.eval.bn_statistics_batch_size), DEFAULT_SEED))
    return "population"


class TrainingSplitStatistics:
    """Population statistics of a training run's current weights, computed at most once per
    optimizer step (the validation run and the diagnostics at one epoch end share a pass)."""

    def __init__(self, train_images, data_spec, batch_size=DEFAULT_BATCH_SIZE,
                 seed=DEFAULT_SEED):
        self.dataset = training_view(train_images, data_spec, batch_size, seed)
        self.seed = seed
        self._step, self._statistics = None, None

    def __call__(self, model):
        step = int(model.optimizer.iterations.numpy()) if model.optimizer else None
        if self._statistics is None or step is None or step != self._step:
            self._statistics = population_statistics(model, self.dataset, self.seed)
            self._step = step
        return self._statistics


class PopulationStatisticsForValidation(keras.callbacks.Callback):
    """Training's periodic evaluation with population statistics under the current weights.

    Before each validation run inside `fit` the statistics of the training images come from
    one pass (`TrainingSplitStatistics`); after it the moving averages training keeps come
    back, so the checkpoints written next, and a resumed run, are as without this callback.
    """

    def __init__(self, statistics):
        super().__init__()
        self.statistics = statistics
        self._applied = None

    def on_test_begin(self, logs=None):
        self._applied = applied(self.model, self.statistics(self.model))
        self._applied.__enter__()

    def on_test_end(self, logs=None):
        if self._applied is not None:
            self._applied.__exit__(None, None, None)
            self._applied = None
