"""Pretrained models: packaged from a model_dir, loaded back with the same outputs, exported."""
import json
import subprocess
import sys

import numpy as np
import pytest

import tf_lvae
from tf_lvae.storage import model_zoo
from tf_lvae.storage import checkpoints
from tests.conftest import REPO_ROOT


def test_packaged_model_loads_back_identically(tmp_path, trained_model_dir):
    model, config, epochs = checkpoints.load_model(trained_model_dir)
    card = dict(name="tiny", model_spec=json.loads(model.spec.to_json()), config=config,
                epochs=epochs, bn_statistics="moving", test_bounds=[])
    model_zoo.save(model, "tiny", card, directory=tmp_path)
    assert model_zoo.available(tmp_path) == ["tiny"]
    loaded = model_zoo.load("tiny", directory=tmp_path)
    images = (np.random.default_rng(0).random((3, 28, 28, 1)) < 0.3).astype(np.float32)
    np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())
    np.testing.assert_array_equal(loaded.sample(4, seed=2).numpy(), model.sample(4, seed=2).numpy())
    assert model_zoo.model_card("tiny", tmp_path)["epochs"] == epochs
    with pytest.raises(ValueError, match="no pretrained model named 'nope'; shipped: tiny"):
        model_zoo.load("nope", directory=tmp_path)
    # a weights file that does not match its card is refused
    np.savez(tmp_path / "tiny.npz", only=np.zeros(3))
    with pytest.raises(ValueError, match="does not match its model card"):
        model_zoo.load("tiny", directory=tmp_path)


@pytest.mark.skipif(not model_zoo.available(), reason="no model shipped in this checkout")
def test_shipped_models_load_and_are_small():
    for name in model_zoo.available():
        size = (model_zoo.PRETRAINED_DIR / f"{name}.npz").stat().st_size
        assert size <= 10 * 2 ** 20, f"{name}: {size} bytes"
        card = model_zoo.model_card(name)
        assert card["bn_statistics"] == "population" and card["test_bounds"]
        model = tf_lvae.pretrained(name)
        samples = model.sample(4, seed=0).numpy()
        assert samples.shape == (4, *model.spec.image_shape) and np.all(np.isfinite(samples))
