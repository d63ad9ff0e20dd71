"""The authors' options (shared/OFFICIAL_CODE.md) against independent references.

  * the model options (leaky slope, batch norm on the latent heads, the LVAE's upward input, a
    separate inference top-down network): a numpy forward pass of the deterministic posterior
    (`encode`) written from the paper's equations and the options' definitions;
  * gradient clipping: numpy's total-norm constraint (Lasagne's formula) then element-wise clip;
  * the learning-rate schedule: the closed form lr * 0.75 ** floor(step / every);
  * old model_dirs: a model_spec.json written before the options loads as the paper's model.
"""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae import experiment_config
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.training import gradient_clipping
from tf_lvae.training import loop as training
from tf_lvae.configs import mnist, mnist_authors, mnist_finetune
from tf_lvae.training.train_step import build_model
from tf_lvae.model.spec import ModelSpec

SMALL = dict(image_shape=(6, 6, 1), latent_sizes=(5, 4, 3), hidden_sizes=(12, 9, 7))
AUTHORS = dict(batch_norm_heads=True, upward_input="mean", share_top_down=False,
               leaky_relu_slope=0.01)
OPTIONS = [{}] + [{name: value} for name, value in AUTHORS.items()] + [AUTHORS]
OPTION_IDS = ["paper"] + list(AUTHORS) + ["authors"]


def _softplus(x):
    return np.logaddexp(0.0, x)


def _randomized(model, seed=0):
    """BatchNorm statistics, scales and shifts far from their initial values."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "moving_mean" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))
        elif "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.3, 3.0, variable.shape).astype(np.float32))
        elif "gamma" in variable.path:
            variable.assign(rng.normal(1.0, 0.3, variable.shape).astype(np.float32))
    return model


def _numpy_encode(model, x):
    """[(mean, std)] bottom-up of the deterministic posterior, inference mode, in float64."""
    spec = model.spec

    def batch_norm(norm, h):
        return ((h - norm.moving_mean.numpy()) / np.sqrt(norm.moving_variance.numpy() + 1e-5)
                * norm.gamma.numpy() + norm.beta.numpy())

    def mlp(block, h):
        for i, dense in enumerate(block.dense_layers):
            h = h @ dense.kernel.numpy() + (dense.bias.numpy() if dense.use_bias else 0.0)
            if spec.batch_norm:
                h = batch_norm(block.norm_layers[i], h)
            h = np.maximum(h, spec.leaky_relu_slope * h)   # max(x, a x), 0 <= a < 1
        return h

    def head(layer, h):
        pre = h @ layer.dense.kernel.numpy()
        if spec.batch_norm_heads:   # Linear -> BatchNorm -> identity / softplus, no bias
            assert not layer.dense.use_bias
            pre = batch_norm(layer.norm, pre)
        else:
            pre = pre + layer.dense.bias.numpy()
        mean, pre_var = np.split(pre, 2, axis=-1)
        return mean, _softplus(pre_var) + spec.variance_floor

    stats, up_input = [], x
    for i in range(spec.num_layers):
        d = mlp(model.up_mlps[i], up_input)
        stats.append(head(model.up_heads[i], d))
        up_input = d if spec.upward_input == "hidden" else stats[-1][0]   # eq. 13 / only_mu_up
    out = [None] * spec.num_layers
    z, var = stats[-1]
    out[-1] = (z, np.sqrt(var))
    for i in reversed(range(spec.num_layers - 1)):
        if spec.share_top_down:
            mean_t, var_t = head(model.down_heads[i], mlp(model.down_mlps[i], z))
        else:
            mean_t, var_t = head(model.inference_down_heads[i],
                                 mlp(model.inference_down_mlps[i], z))
        mean_hat, var_hat = stats[i]
        var_q = 1.0 / (1.0 / var_hat + 1.0 / var_t)        # eq. 18
        z = (mean_hat / var_hat + mean_t / var_t) * var_q  # eq. 17, the mean propagated
        out[i] = (z, np.sqrt(var_q))
    return out


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
def test_lvae_encode_equals_numpy_forward_pass(options):
    keras.utils.set_random_seed(1)
    model = _randomized(build_model(ModelSpec(**SMALL, **options)))
    images = (np.random.default_rng(2).random((7, 6, 6, 1)) < 0.4).astype(np.float32)
    expected = _numpy_encode(model, images.reshape(7, -1).astype(np.float64))
    for (mean, std), (ref_mean, ref_std) in zip(model.encode(images), expected):
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(std, ref_std, rtol=1e-4, atol=1e-5)


def test_options_change_the_function_and_the_wiring():
    keras.utils.set_random_seed(1)
    paper = _randomized(build_model(ModelSpec(**SMALL)))
    authors = build_model(ModelSpec(**SMALL, **AUTHORS))
    images = (np.random.default_rng(2).random((4, 6, 6, 1)) < 0.4).astype(np.float32)
    # the generative p(z_i | z_{i+1}) MLP is hidden[i] wide beside a separate inference
    # top-down network of width hidden[i + 1] (the authors' -ladder_share_params False)
    assert [m.width for m in authors.down_mlps] == [12, 9]
    assert [m.width for m in authors.inference_down_mlps] == [9, 7]
    assert [m.width for m in paper.down_mlps] == [9, 7] and not paper.inference_down_mlps
    assert all(h.batch_norm and not h.dense.use_bias for h in authors.up_heads)
    assert not [n for n in batch_norm_statistics.batch_norm_layers(authors)
                if "observation" in n.path]   # never on p(x | z)
    # each option alone changes the deterministic posterior of a randomized model
    for name, value in AUTHORS.items():
        keras.utils.set_random_seed(1)
        other = build_model(ModelSpec(**SMALL, **{name: value}))
        common = {v.path.split("/", 1)[1]: v for v in other.weights}
        for variable in paper.weights:   # the paper model's weights where they exist
            key = variable.path.split("/", 1)[1]
            if key in common and common[key].shape == variable.shape:
                common[key].assign(variable)
        assert not np.allclose(other.encode(images)[0][0], paper.encode(images)[0][0],
                               atol=1e-4), name


def test_vae_stores_the_lvae_only_options_at_their_defaults():
    spec = ModelSpec(inference="vae", **SMALL, **AUTHORS)
    assert (spec.upward_input, spec.share_top_down) == ("hidden", True)
    assert spec.batch_norm_heads and spec.leaky_relu_slope == 0.01
    with pytest.raises(ValueError, match="upward_input must be one of"):
        ModelSpec(upward_input="d")
    with pytest.raises(ValueError, match="leaky_relu_slope must be in"):
        ModelSpec(leaky_relu_slope=1.5)
    with pytest.raises(ValueError, match="batch_norm_heads=True needs model.batch_norm"):
        ModelSpec(batch_norm=False, batch_norm_heads=True)


def test_a_model_spec_written_before_the_options_loads_as_the_papers_model():
    old = {"image_shape": [28, 28, 1], "latent_sizes": [64, 32], "hidden_sizes": [512, 256],
           "inference": "lvae", "likelihood": "bernoulli", "activation": "leaky_relu",
           "batch_norm": True, "variance_floor": 1e-5}
    spec = ModelSpec.from_json(json.dumps(old))
    assert (spec.leaky_relu_slope, spec.batch_norm_heads, spec.upward_input,
            spec.share_top_down) == (0.1, False, "hidden", True)
    config = mnist.get_config()   # a config.json of the same age lacks the model fields too
    with config.unlocked():
        for name in ("leaky_relu_slope", "batch_norm_heads", "upward_input", "share_top_down"):
            del config.model[name]
    assert experiment_config.model_spec(config) == experiment_config.model_spec(mnist.get_config())


def test_configs_name_the_authors_settings():
    authors = experiment_config.model_spec(mnist_authors.get_config())
    assert (authors.leaky_relu_slope, authors.batch_norm_heads, authors.upward_input,
            authors.share_top_down) == (0.01, True, "mean", False)
    config = mnist_authors.get_config()
    assert (config.train.clip_global_norm, config.train.clip_value) == (4.0, 0.9)
    paper = mnist.get_config()
    assert (paper.train.clip_global_norm, paper.train.clip_value) == (0.0, 0.0)
    assert experiment_config.model_spec(paper) == ModelSpec(image_shape=(28, 28, 1))
    finetune = mnist_finetune.get_config("authors")
    assert (finetune.train.mc_samples, finetune.train.iw_samples, finetune.train.lr_decay_factor,
            finetune.train.lr_decay_every_epochs) == (10, 10, 0.75, 200)
    assert experiment_config.model_spec(finetune) == authors
    experiment_config.validate_config(finetune)


def _numpy_clip(gradients, max_norm, value):
    """Lasagne's total_norm_constraint (eps 1e-7) then numpy's clip, in float64."""
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in gradients))
    multiplier = min(norm, max_norm) / (1e-7 + norm)
    return [np.clip(g * multiplier, -value, value) for g in gradients]


@pytest.mark.parametrize("max_norm, value", [(4.0, 0.9), (0.5, 0.9), (4.0, 0.05), (1e9, 1e9)])
def test_clipping_equals_numpy_reference(max_norm, value):
    rng = np.random.default_rng(0)
    gradients = [rng.normal(0, 1.0, (30, 20)).astype(np.float32),
                 rng.normal(0, 3.0, (20,)).astype(np.float32)]
    clipped = gradient_clipping.clip_gradients([tf.constant(g) for g in gradients],
                                               max_norm, value)
    for got, want in zip(clipped, _numpy_clip(gradients, max_norm, value)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_clipping_under_a_loss_scale_is_the_scaled_float32_clip():
    rng = np.random.default_rng(1)
    gradients = [rng.normal(0, 2.0, (50,)).astype(np.float32)]
    scale = 2.0 ** 15
    scaled = gradient_clipping.clip_gradients([tf.constant(gradients[0] * scale)], 4.0, 0.9,
                                              scale=scale)
    np.testing.assert_allclose(scaled[0] / scale, _numpy_clip(gradients, 4.0, 0.9)[0],
                               rtol=1e-5, atol=1e-6)


def test_clipping_off_and_non_finite_gradients():
    g = [tf.constant([5.0, -7.0]), None]
    assert gradient_clipping.clip_global_gradients(g, 0.0, 0.0) is g
    assert gradient_clipping.clip_gradients(g, 1.0, 0.5)[1] is None
    bad = gradient_clipping.clip_gradients([tf.constant([np.inf, 1.0])], 4.0, 0.9)
    assert not np.all(np.isfinite(bad[0]))   # the train step still sees it and skips


def test_learning_rate_schedule_is_the_closed_form():
    schedule = training.learning_rate_schedule(1e-3, 0.75, 200 * 10)
    for step in (0, 1999, 2000, 5999, 6000, 39_999):
        np.testing.assert_allclose(float(schedule(step)), 1e-3 * 0.75 ** (step // 2000),
                                   rtol=1e-6)
    assert training.learning_rate_schedule(1e-3) == 1e-3
