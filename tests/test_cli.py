"""The train and evaluate command lines, run as users run them (fresh processes)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import SHARED_DATA


def _run(*args, cwd=None, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--dataset=cifar10"], "unknown dataset 'cifar10'"),
    (["--dataset=binarized_mnist", "--config.train.epochs=0"], "train.epochs must be"),
    (["--dataset=binarized_mnist", "--layers=9"], "--layers must be between 1 and 5"),
    (["--dataset=omniglot"], "--data_dir"),
    (["--dataset=mnist", "--data_dir=/nonexistent/mnist"], "/nonexistent/mnist"),
])
def test_train_cli_errors_are_clear_and_write_nothing(tmp_path, args, message):
    model_dir = tmp_path / "model"
    result = _run("tf_lvae.train", *args, f"--model_dir={model_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not model_dir.exists()


@pytest.mark.parametrize("override", ["--dataset=cifar10", "--config.train.epochs=0",
                                      "--config.model.latent_sizes=(8,x)"])
def test_train_cli_reports_a_config_error_before_tensorflow_loads(tmp_path, override):
    """A typo costs a fraction of a second, not TensorFlow's start-up (-X importtime lists
    every module the command imported)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tf_lvae.train", override,
                             f"--model_dir={tmp_path / 'model'}"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: " in result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "tf_lvae.experiment_config" in imported      # the config was checked ...
    assert not {"tensorflow", "keras"} & imported       # ... without loading TensorFlow


@pytest.mark.slow
def test_train_cli_reads_real_mnist_idx_files_from_data_dir(tmp_path):
    mnist_dir = SHARED_DATA / "mnist"
    if not mnist_dir.exists():
        pytest.skip("real MNIST files are not available (../shared/data/mnist)")
    model_dir = tmp_path / "mnist"
    result = _run("tf_lvae.train", "--dataset=mnist", f"--data_dir={mnist_dir}",
                  f"--model_dir={model_dir}", "--epochs=1", "--layers=2",
                  "--config.data.max_train_examples=2560", "--config.train.warmup_epochs=1",
                  "--config.train.verbose=2", "--config.train.jit_compile=False",
                  "--config.model.hidden_sizes=(64,32,16,8,4)")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["data"]["dataset"] == "mnist"
    assert config["model"]["latent_sizes"] == [64, 32]
    assert (model_dir / "checkpoints" / "checkpoint").exists()


def test_evaluate_cli_prints_and_writes_the_bounds(trained_model_dir, tmp_path):
    output = tmp_path / "eval.json"
    result = _run("tf_lvae.evaluate", f"--model_dir={trained_model_dir}", "--iw_samples=64",
                  "--max_examples=200", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    written = json.loads(output.read_text())
    for key in ("elbo", "iw_bound", "iw_samples", "num_examples", "kl_per_layer",
                "active_units_per_layer"):
        assert printed[key] == written[key]
    assert printed["iw_samples"] == 64 and printed["num_examples"] == 200
    assert printed["iw_bound"] >= printed["elbo"]
    assert -320 < printed["elbo"] < -60          # plausible nats for a briefly trained model
    assert len(written["kl_per_unit"]) == 2 and len(written["kl_per_unit"][0]) == 16
    assert sum(written["kl_per_layer"]) == pytest.approx(written["kl"], rel=1e-6)


def test_evaluate_cli_refuses_a_folder_without_a_trained_model(tmp_path):
    result = _run("tf_lvae.evaluate", f"--model_dir={tmp_path}")
    assert result.returncode == 2
    assert "not a tf_lvae model_dir" in result.stderr
