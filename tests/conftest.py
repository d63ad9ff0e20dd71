"""Shared fixtures: small real configs and a tiny model trained on the shipped binarized MNIST."""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def tiny_config(**train_overrides):
    """The quick config shrunk for tests: a 2-layer LVAE of small widths, 1 epoch."""
    from tf_lvae.configs import quick
    config = quick.get_config()
    config.model.latent_sizes = (16, 8)
    config.model.hidden_sizes = (64, 32)
    config.data.max_train_examples = 10240
    config.train.epochs = 1
    config.train.warmup_epochs = 1
    config.train.eval_every_epochs = 0
    config.train.diagnostics_every_epochs = 0  # test_diagnostics.py tests them (~3 s a run)
    config.train.verbose = 0
    config.train.jit_compile = False  # XLA compiles cost more than these tiny runs save
    config.eval.iw_samples = 50
    for key, value in train_overrides.items():
        config.train[key] = value
    return config


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(model_dir, model, History) of a tiny LVAE trained for 3 short epochs, tiny_config(epochs=3)
    (shared, read-only)."""
    from tf_lvae.training import loop as training
    model_dir = tmp_path_factory.mktemp("trained") / "model"
    model, history = training.train(tiny_config(epochs=3), str(model_dir))
    return model_dir, model, history


@pytest.fixture(scope="session")
def trained_model_dir(trained):
    """The model_dir of `trained`."""
    return trained[0]
