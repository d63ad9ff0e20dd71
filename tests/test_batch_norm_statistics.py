"""Population batch-norm statistics against a numpy computation of the same statistics.

The reference is a numpy forward pass of the whole model in training mode (every BatchNorm
normalizes by its batch, as in `batch_norm_statistics`), batch by batch with the same posterior
noise, pooling each BatchNorm layer's inputs over all examples: independent of TF's
BatchNormalization, of the momentum trick and of the float64 pooling formula.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae.evaluation import batch_norm_statistics as bns
from tf_lvae.model import noise
from tf_lvae.training.train_step import build_model
from tf_lvae.model.spec import ModelSpec

SMALL = dict(image_shape=(6, 6, 1), latent_sizes=(5, 4, 3), hidden_sizes=(12, 9, 7))
AUTHORS = dict(batch_norm_heads=True, upward_input="mean", share_top_down=False,
               leaky_relu_slope=0.01)
EPS = 1e-5  # layers.BATCH_NORM_EPSILON


def _softplus(x):
    return np.logaddexp(0.0, x)


class _NumpyForward:
    """The model's training-mode forward pass in numpy (float64), recording BatchNorm inputs."""

    def __init__(self, model):
        self.model, self.spec, self.inputs = model, model.spec, {}

    def _batch_norm(self, layer, h):
        self.inputs.setdefault(layer.path, []).append(h)
        mean, var = h.mean(0), h.var(0)
        return ((h - mean) / np.sqrt(var + EPS) * layer.gamma.numpy()
                + layer.beta.numpy())

    def mlp(self, block, h):
        for i, dense in enumerate(block.dense_layers):
            h = h @ dense.kernel.numpy()
            if dense.use_bias:
                h = h + dense.bias.numpy()
            if block.batch_norm:
                h = self._batch_norm(block.norm_layers[i], h)
            if block.activation == "leaky_relu":
                h = np.where(h > 0, h, block.leaky_relu_slope * h)
        return h

    def head(self, head, h):
        pre = h @ head.dense.kernel.numpy()
        if head.dense.use_bias:
            pre = pre + head.dense.bias.numpy()
        if head.batch_norm:
            pre = self._batch_norm(head.norm, pre)
        mean, pre_var = np.split(pre, 2, axis=-1)
        return mean, _softplus(pre_var) + self.spec.variance_floor

    def run(self, x, batch_seed):
        def eps(layer, size):
            return noise.standard_normal([len(x), size], tf.stack([batch_seed, layer])).numpy()

        model, spec, num_layers = self.model, self.spec, self.spec.num_layers
        if spec.inference == "vae":
            zs, h = [], x
            for i in range(num_layers):
                mean, var = self.head(model.up_heads[i], self.mlp(model.up_mlps[i], h))
                zs.append(mean + np.sqrt(var) * eps(i, spec.latent_sizes[i]))
                h = zs[-1]
            for i in range(num_layers - 1):
                self.head(model.down_heads[i], self.mlp(model.down_mlps[i], zs[i + 1]))
            self.mlp(model.decoder_mlp, zs[0])
            return
        stats, up_input = [], x
        for i in range(num_layers):
            d = self.mlp(model.up_mlps[i], up_input)
            stats.append(self.head(model.up_heads[i], d))
            up_input = d if spec.upward_input == "hidden" else stats[-1][0]
        mean, var = stats[-1]
        z = mean + np.sqrt(var) * eps(num_layers - 1, spec.latent_sizes[-1])
        for i in reversed(range(num_layers - 1)):
            prior = self.head(model.down_heads[i], self.mlp(model.down_mlps[i], z))
            top_down = prior if spec.share_top_down else self.head(
                model.inference_down_heads[i], self.mlp(model.inference_down_mlps[i], z))
            mean_hat, var_hat = stats[i]
            var_q = 1.0 / (1.0 / var_hat + 1.0 / top_down[1])
            mean_q = (mean_hat / var_hat + top_down[0] / top_down[1]) * var_q
            z = mean_q + np.sqrt(var_q) * eps(i, spec.latent_sizes[i])
        self.mlp(model.decoder_mlp, z)


def _model(inference, options):
    keras.utils.set_random_seed(3)
    model = build_model(ModelSpec(inference=inference, **SMALL, **options))
    # Trained-looking BatchNorm scales and shifts, so upper layers' inputs depend on them.
    rng = np.random.default_rng(4)
    for variable in model.trainable_weights:
        if "gamma" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(1.0 if "gamma" in variable.path else 0.3, 0.4,
                                       variable.shape).astype(np.float32))
    return model


@pytest.mark.parametrize("options", [{}, AUTHORS], ids=["paper", "authors"])
@pytest.mark.parametrize("inference", ["lvae", "vae"])
def test_population_statistics_equal_numpy_pooled_training_mode_inputs(inference, options):
    model = _model(inference, options)
    rng = np.random.default_rng(5)
    images = (rng.random((70, *SMALL["image_shape"])) < 0.4).astype(np.float32)
    batch_size, seed = 32, 7   # batches of 32, 32 and 6
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
    moving_before = [v.numpy() for v in model.non_trainable_weights]

    statistics = bns.population_statistics(model, dataset, seed=seed)

    reference = _NumpyForward(model)
    x = images.reshape(len(images), -1).astype(np.float64)
    for index, start in enumerate(range(0, len(x), batch_size)):
        batch_seed = tf.random.stateless_uniform([], seed=tf.constant([seed, index]),
                                                 minval=None, maxval=None, dtype=tf.int32)
        reference.run(x[start:start + batch_size], batch_seed)
    norms = bns.batch_norm_layers(model)
    assert {norm.path for norm in norms} == set(reference.inputs)
    assert set(statistics) == set(norms)
    for norm, (mean, variance) in statistics.items():
        rows = np.concatenate(reference.inputs[norm.path])
        assert rows.shape[0] == len(images)
        # float32 forward pass vs float64 numpy through up to ~14 layers: ~1e-5 relative
        scale = np.abs(rows).max()
        np.testing.assert_allclose(mean, rows.mean(0), rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(variance, rows.var(0), rtol=1e-3, atol=1e-4 * scale ** 2)
    # the model's own moving averages are untouched
    for before, variable in zip(moving_before, model.non_trainable_weights):
        np.testing.assert_array_equal(before, variable.numpy())


def test_population_statistics_differ_from_any_single_batch_and_get_applied():
    """Pooled statistics are those of all rows (not the last or an average batch's variance),
    and `applied` puts them in place for the block only."""
    model = _model("lvae", {})
    rng = np.random.default_rng(6)
    # two batches of different means: the pooled variance includes the between-batch spread
    images = np.concatenate([(rng.random((20, 6, 6, 1)) < p).astype(np.float32)
                             for p in (0.1, 0.9)])
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(20)
    statistics = bns.population_statistics(model, dataset)
    first = model.up_mlps[0].norm_layers[0]
    rows = images.reshape(40, -1).astype(np.float64) @ model.up_mlps[0].dense_layers[0].kernel.numpy()
    mean, variance = statistics[first]
    np.testing.assert_allclose(mean, rows.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(variance, rows.var(0), rtol=1e-4, atol=1e-6)
    halves = (rows[:20].var(0) + rows[20:].var(0)) / 2
    assert np.all(variance >= halves - 1e-6) and np.any(variance > halves * 1.05)

    moving = first.moving_variance.numpy().copy()
    with bns.applied(model, statistics):
        np.testing.assert_allclose(first.moving_variance.numpy(), variance.astype(np.float32))
    np.testing.assert_array_equal(first.moving_variance.numpy(), moving)


def test_for_evaluation_modes():
    model = _model("lvae", {})
    before = [v.numpy() for v in model.non_trainable_weights]
    config = {"data": {"dataset": "binarized_mnist", "train_split": "train"}}
    assert bns.for_evaluation(model, config, "moving") == "moving"
    for old, variable in zip(before, model.non_trainable_weights):
        np.testing.assert_array_equal(old, variable.numpy())
    with pytest.raises(ValueError, match="bn_statistics must be one of population, moving"):
        bns.for_evaluation(model, config, "exact")
    no_batch_norm = build_model(ModelSpec(batch_norm=False, **SMALL))
    assert bns.for_evaluation(no_batch_norm, config) == "none"
