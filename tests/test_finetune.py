"""Fine-tuning (Table 1's best rows): start from another model_dir's weights, decay the
learning rate on a schedule, and resume as an uninterrupted run would."""
import numpy as np
import pytest

from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.training import loop as training
from tf_lvae.storage import checkpoints
from tests.conftest import tiny_config


def _finetune_config(init_from, epochs):
    config = tiny_config(epochs=epochs, warmup_epochs=0, mc_samples=2, iw_samples=2,
                         lr_decay_factor=0.5, lr_decay_every_epochs=1)
    config.data.max_train_examples = 1024
    config.train.init_from = str(init_from)
    return config


def _weights(model):
    return [v.numpy() for v in model.weights]


@pytest.mark.slow
def test_finetuning_starts_from_the_weights_decays_and_resumes_exactly(tmp_path):
    base_config = tiny_config(epochs=1)
    base_config.data.max_train_examples = 1024
    base, _ = training.train(base_config, str(tmp_path / "base"))
    base_weights = _weights(base)
    steps_per_epoch = 1024 // base_config.train.batch_size

    # with a vanishing learning rate one epoch of fine-tuning leaves base's trainable weights
    still = _finetune_config(tmp_path / "base", 1)
    still.train.learning_rate = 1e-12
    unmoved, _ = training.train(still, str(tmp_path / "still"))
    for a, b in zip([v.numpy() for v in base.trainable_weights],
                    [v.numpy() for v in unmoved.trainable_weights]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)

    straight, _ = training.train(_finetune_config(tmp_path / "base", 3), str(tmp_path / "a"))
    assert int(straight.optimizer.iterations.numpy()) == 3 * steps_per_epoch
    np.testing.assert_allclose(float(straight.optimizer.learning_rate.numpy()),
                               1e-3 * 0.5 ** 3, rtol=1e-6)

    first, _ = training.train(_finetune_config(tmp_path / "base", 1), str(tmp_path / "b"))
    # one epoch of fine-tuning moved base's weights but kept its architecture
    assert any(not np.allclose(a, b) for a, b in zip(base_weights, _weights(first)))
    resumed, _ = training.train(_finetune_config(tmp_path / "base", 3), str(tmp_path / "b"))
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # the finished model it started from is untouched
    reloaded, _, epochs = checkpoints.load_model(tmp_path / "base")
    assert epochs == 1
    for a, b in zip(base_weights, _weights(reloaded)):
        np.testing.assert_array_equal(a, b)


def test_init_from_a_different_architecture_is_refused_before_writing(tmp_path,
                                                                     trained_model_dir):
    config = _finetune_config(trained_model_dir, 1)   # a tiny_config() model: 16-8, 64-32
    config.model.latent_sizes, config.model.hidden_sizes = (8, 4), (32, 16)
    with pytest.raises(model_dir_lib.ModelDirError, match="holds a different model"):
        training.train(config, str(tmp_path / "other"))
    assert not (tmp_path / "other" / model_dir_lib.CONFIG_FILE).exists()
    config.train.init_from = str(tmp_path / "missing")
    with pytest.raises(model_dir_lib.ModelDirError, match="not a tf_lvae model_dir"):
        training.train(config, str(tmp_path / "other"))
