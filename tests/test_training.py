"""Real training runs on the shipped binarized MNIST: learning, warm-up, resume."""
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from tf_lvae import data
from tf_lvae.training import loop as training
from tf_lvae import experiment_config
from tf_lvae.evaluation.likelihood import evaluate_images
from tf_lvae.model.spec import ModelSpec
from tf_lvae.storage.model_dir import STATE_FILE
from tf_lvae.training.train_step import build_model
from tf_lvae.storage.checkpoints import load_model
from tf_lvae.training.train_step import warmup_beta


def test_warmup_beta_rises_linearly_then_stays_at_one():
    values = [float(warmup_beta(step, 100)) for step in (0, 25, 50, 100, 1000)]
    assert values == pytest.approx([0.0, 0.25, 0.5, 1.0, 1.0])
    assert float(warmup_beta(0, 0)) == 1.0  # N = 0 disables warm-up


def test_short_training_run_clearly_improves_the_test_elbo(trained):
    _, model, history = trained   # tiny_config(epochs=3), trained once for the session
    config = tiny_config(epochs=3)
    test_images = data.load_arrays("binarized_mnist", "test")[0][:1000]
    keras.utils.set_random_seed(config.train.seed)
    untrained = build_model(experiment_config.model_spec(config))
    before = evaluate_images(untrained, test_images, iw_samples=1, verbose=0)["elbo"]
    after = evaluate_images(model, test_images, iw_samples=1, verbose=0)["elbo"]
    assert before < -400                     # an untrained model is near chance (-543 nats)
    assert after > before + 200
    assert after > -300
    assert history.history["elbo"][2] > history.history["elbo"][0]
    assert history.history["beta"][0] < 1.0 and history.history["beta"][2] == 1.0


def test_training_resumes_from_the_last_checkpoint_after_an_interruption(tmp_path):
    model_dir = str(tmp_path / "run")

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt("simulated interruption after the first epoch")

    config = tiny_config(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, model_dir, extra_callbacks=[Interrupt()])
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["epochs_completed"] == 1 and not state["finished"]
    _, _, epochs = load_model(model_dir)
    assert epochs == 1

    model, history = training.train(config, model_dir)
    assert history.epoch == [1]               # only the missing epoch ran
    steps_per_epoch = config.data.max_train_examples // config.train.batch_size
    assert int(model.optimizer.iterations.numpy()) == 2 * steps_per_epoch
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["epochs_completed"] == 2 and state["finished"]

    # A third run has nothing left to do and leaves the trained weights untouched.
    before = [w.numpy() for w in load_model(model_dir)[0].weights]
    _, history = training.train(config, model_dir)
    assert history is None
    after = [w.numpy() for w in load_model(model_dir)[0].weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_model_dir_of_another_architecture_is_refused(tmp_path, trained_model_dir):
    config = tiny_config()
    config.model.latent_sizes = (4,)
    config.model.hidden_sizes = (16,)
    with pytest.raises(ValueError, match="different model"):
        training.train(config, str(trained_model_dir))


def test_layers_shortcut_keeps_the_bottom_layers():
    from tf_lvae.configs import mnist
    config = experiment_config.apply_shortcuts(mnist.get_config(), layers=3, model="vae")
    assert tuple(config.model.latent_sizes) == (64, 32, 16)
    assert tuple(config.model.hidden_sizes) == (512, 256, 128)
    assert config.model.inference == "vae"
    with pytest.raises(experiment_config.ConfigError, match="--layers must be between 1 and 5"):
        experiment_config.apply_shortcuts(mnist.get_config(), layers=6)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_learns_resumes_and_loads_as_float32(tmp_path, precision):
    """16-bit MLPs (float16 with loss scaling) with float32 heads: the ELBO improves like a
    float32 run's, a resumed run continues, and the model_dir loads into a float32 model."""
    config = tiny_config(epochs=2, precision=precision)
    model_dir = str(tmp_path / "run")

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated interruption after the first epoch")

    with pytest.raises(KeyboardInterrupt):
        training.train(config, model_dir, extra_callbacks=[Interrupt()])
    model, history = training.train(config, model_dir)
    assert history.epoch == [1]
    assert model.up_mlps[0].compute_dtype == precision.split("_")[1]
    assert model.up_heads[0].dense.compute_dtype == "float32"
    if precision == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert np.isfinite(float(model.optimizer.dynamic_scale.numpy()))
    assert history.history["skipped_steps"][0] <= 10   # loss-scale calibration at most
    test_images = data.load_arrays("binarized_mnist", "test")[0][:500]
    loaded, _, epochs = load_model(model_dir)
    assert epochs == 2 and loaded.up_mlps[0].compute_dtype == "float32"
    elbo = evaluate_images(loaded, test_images, iw_samples=1, verbose=0)["elbo"]
    assert -300 < elbo   # an untrained model is near -543 nats (see the float32 test above)


def test_steps_per_call_divides_the_epoch_and_the_steps_to_go():
    from tf_lvae.training.fault_tolerance import steps_per_call
    assert steps_per_call(8, 195) == 5              # MNIST: 195 steps per epoch
    assert steps_per_call(8, 40) == 8
    assert steps_per_call(8, 40, steps_done=12) == 4   # resumed after 12 of 40 steps
    assert steps_per_call(1, 40) == 1 and steps_per_call(8, 7) == 7 and steps_per_call(8, 13) == 1


@pytest.mark.slow
def test_steps_per_execution_changes_speed_not_results(tmp_path):
    """8 steps per call: the same weights as 1 per call, checkpoints at call ends, and an
    interrupted run resumes to the same end."""
    one = tiny_config(epochs=2, checkpoint_every_steps=12)
    many = tiny_config(epochs=2, checkpoint_every_steps=12, steps_per_execution=8)
    reference, _ = training.train(one, str(tmp_path / "one"))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("simulated interruption after the first epoch")

    with pytest.raises(KeyboardInterrupt):
        training.train(many, str(tmp_path / "many"), extra_callbacks=[Interrupt()])
    model, history = training.train(many, str(tmp_path / "many"))
    assert model.steps_per_execution == 8 and history.epoch == [1]
    assert int(model.optimizer.iterations.numpy()) == int(reference.optimizer.iterations.numpy())
    for ours, theirs in zip(model.weights, reference.weights):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    # every 12 steps, at the end of the call that crosses a multiple: 16, 24, 40 (epoch), ...
    state = json.loads((tmp_path / "many" / STATE_FILE).read_text())
    assert state["epochs_completed"] == 2 and state["finished"]


@pytest.mark.parametrize("section, field, value, message", [
    ("train", "epochs", 0, "train.epochs must be an integer >= 1"),
    ("train", "learning_rate", -1.0, "train.learning_rate must be > 0"),
    ("model", "inference", "gan", "model.inference must be one of"),
    ("model", "hidden_sizes", (512,), "one width per stochastic layer"),
    ("data", "dataset", "cifar", "unknown dataset 'cifar'"),
    ("data", "train_split", "everything", "data.train_split must be one of"),
    ("train", "precision", "float8", "train.precision must be one of"),
])
def test_bad_config_values_get_specific_errors(section, field, value, message):
    config = tiny_config()
    config[section][field] = value
    with pytest.raises(experiment_config.ConfigError, match=message):
        experiment_config.validate_config(config)


def test_fit_on_a_tf_data_pipeline_does_not_warn_about_shuffle():
    images = data.load_arrays("binarized_mnist", "train")[0][:64]
    model = build_model(ModelSpec(latent_sizes=(4,), hidden_sizes=(16,)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    pipeline = tf.data.Dataset.from_tensor_slices(images).batch(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(pipeline, epochs=1, verbose=0)
        quiet = [str(w.message) for w in caught if "shuffle" in str(w.message)]
        model.fit(pipeline, epochs=1, verbose=0, shuffle=True)   # an explicit True reaches Keras
        loud = [str(w.message) for w in caught if "shuffle" in str(w.message)]
    assert quiet == [] and len(loud) == 1, (quiet, loud)
    assert np.isfinite(history.history["loss"][0])
