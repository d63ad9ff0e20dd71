"""Tests of the training diagnostics, the paper's figures and `python -m tf_lvae.analyze`.

One real short training run (tiny 2-layer LVAE, 3 epochs on 1,000 binarized MNIST images)
feeds every test that needs a trained model_dir.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from tf_lvae import data
from tf_lvae import experiment_config
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.training import diagnostics
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.analysis import figures
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.analysis.report import analyze_model_dir
from tf_lvae.configs import base
from tf_lvae.storage import checkpoints

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
LATENT, HIDDEN = (8, 4), (32, 16)
EPOCHS, EVERY, K, SUBSET = 3, 2, 10, 200
EXPECTED_PANELS = {"fig2": 1, "fig4": len(LATENT), "fig5": 2, "fig6": len(LATENT), "fig9": 3}


def tiny_config():
    config = base.base_config()
    config.data.num_validation = 59000  # train on the first 1,000 of the 60,000 images
    config.model.latent_sizes, config.model.hidden_sizes = LATENT, HIDDEN
    config.train.epochs, config.train.warmup_epochs = EPOCHS, 1
    config.train.batch_size = 100
    config.train.eval_every_epochs = 1
    config.train.diagnostics_every_epochs = EVERY
    config.train.diagnostics_iw_samples = K
    config.train.diagnostics_examples = SUBSET
    config.train.jit_compile = False  # XLA compiles cost more than they save on 30 steps
    config.train.verbose = 0
    return config


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    from tf_lvae.training import loop as training
    model_dir = tmp_path_factory.mktemp("diagnostics") / "model"
    training.train(tiny_config(), str(model_dir))
    return model_dir


def _png_is_readable(path, min_size=300):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_size, image.shape
    assert float(np.std(image[..., :3])) > 0.02, f"{path} looks blank"


def _event_tags(folder):
    tags = set()
    for path in Path(folder).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


# ------------------------------------------------------------------ during training

def test_history_has_every_epoch_and_validation(trained_dir):
    history = diagnostics.read_history(trained_dir)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    for record in history:
        for key in ("elbo", "kl_1", "kl_2", "beta", "active_units_1", "val_elbo"):
            assert np.isfinite(record[key]), key
    assert history[0]["beta"] < 1.0 <= history[-1]["beta"]  # warm-up over the first epoch


def test_evaluations_at_diagnostics_epochs(trained_dir):
    records = diagnostics.read_evaluations(trained_dir)
    # epoch 0 (before training), every EVERY epochs, and always the last epoch
    assert [r["epoch"] for r in records] == [0, 2, 3]
    for record in records:
        assert record["iw_samples"] == K
        for name in ("eval", "train"):
            result = record[name]
            assert result["num_examples"] == SUBSET
            assert [len(u) for u in result["kl_per_unit"]] == list(LATENT)
            assert result["iw_bound"] >= result["elbo"] - 1.0  # L_K >= L_1 up to MC noise
    assert records[-1]["eval"]["iw_bound"] > records[0]["eval"]["iw_bound"] + 20  # it learned


def test_tensorboard_has_bounds_and_images(trained_dir):
    tags = _event_tags(trained_dir / model_dir_lib.LOG_DIR / diagnostics.TENSORBOARD_RUN)
    for tag in (f"L_{K}/eval", "L_1/train", "kl_per_layer/layer_2", "active_units/layer_1",
                "log10_kl_per_unit/layer_1", "prior_samples", "reconstructions"):
        assert tag in tags, (tag, sorted(tags))
    keras_tags = _event_tags(trained_dir / model_dir_lib.LOG_DIR / "train")
    assert {"epoch_kl_1", "epoch_beta", "epoch_active_units_2"} <= keras_tags


def test_saved_kl_per_unit_matches_evaluate_images(trained_dir):
    """The final record's per-unit KL is what evaluate_images gives for the final model."""
    model, config, epochs = checkpoints.load_model(trained_dir)
    assert epochs == EPOCHS
    saved_record = diagnostics.read_evaluations(trained_dir)[-1]
    # training's diagnostics evaluate with the population statistics, as tf_lvae.evaluate
    assert saved_record["bn_statistics"] == "population"
    assert batch_norm_statistics.for_evaluation(model, config) == "population"
    images = data.load_arrays("binarized_mnist", "test")[0]
    subset = images[diagnostics.subset_indices(len(images), SUBSET)]
    result = evaluation.evaluate_images(model, subset, iw_samples=K, seed=0, verbose=0,
                                        jit_compile=False)
    saved = diagnostics.read_evaluations(trained_dir)[-1]["eval"]
    # The top layer's KL is analytic given x (no sampling): equal up to float round-off.
    np.testing.assert_allclose(saved["kl_per_unit"][-1], result["kl_per_unit"][-1], rtol=1e-3)
    # Lower layers depend on the sampled parent; another seed moves them by ~3% here.
    np.testing.assert_allclose(saved["kl_per_unit"][0], result["kl_per_unit"][0], rtol=0.02,
                               atol=1e-3)
    np.testing.assert_allclose(saved["iw_bound"], result["iw_bound"], rtol=0.01)


def test_diagnostics_config_errors_and_disable():
    config = tiny_config()
    config.train.diagnostics_every_epochs = 0
    experiment = experiment_config.resolve(config)
    assert diagnostics.from_settings(experiment, "unused", np.zeros([4, 28, 28, 1])) == []
    config.train.diagnostics_every_epochs = 1
    config.train.diagnostics_iw_samples = 0
    with pytest.raises(experiment_config.ConfigError,
                       match="diagnostics_iw_samples must be an integer >= 1"):
        experiment_config.resolve(config)


# ------------------------------------------------------------------ pure helpers

def test_read_records_keeps_last_per_epoch_and_skips_cut_lines(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"epoch": 2, "v": 1}\n{"epoch": 1, "v": 2}\n{"epoch": 2, "v": 3}\n'
                    '{"epoch": 3, "v"')
    assert diagnostics.read_records(path) == [{"epoch": 1, "v": 2}, {"epoch": 2, "v": 3}]
    assert diagnostics.read_records(tmp_path / "missing.jsonl") == []


def test_subset_indices_are_fixed_random_and_sorted():
    first, again = (diagnostics.subset_indices(1000, 50) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert len(set(first)) == 50 and np.all(np.diff(first) > 0) and first[-1] > 100
    np.testing.assert_array_equal(diagnostics.subset_indices(5, 50), np.arange(5))


def test_tile_images_layout():
    images = np.stack([np.full([2, 3, 1], v) for v in (0.0, 1.0, 0.25)])
    grid = diagnostics.tile_images(images, columns=2, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert grid[1, 1, 0] == 0.0 and grid[1, 5, 0] == 1.0 and grid[4, 1, 0] == 0.25
    assert grid[4, 5, 0] == 0.5  # the empty slot keeps the padding value


def test_pca_2d_finds_the_main_direction():
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    points = np.stack([t, 2 * t, 0.01 * rng.normal(size=500)], axis=1)
    projected, ratio = figures.pca_2d(points)
    assert projected.shape == (500, 2) and ratio[0] > 0.99
    assert abs(np.corrcoef(projected[:, 0], t)[0, 1]) > 0.999


def test_likelihood_curves_need_records():
    with pytest.raises(ValueError, match="diagnostics_every_epochs"):
        figures.likelihood_curves([], [])


# ------------------------------------------------------------------ analysis

@pytest.mark.slow
def test_analyze_writes_every_figure_and_summary(trained_dir, tmp_path):
    output = analyze_model_dir(trained_dir, tmp_path / "analysis", iw_samples=5,
                               max_examples=300, pca_examples=300)
    assert output["skipped"] == {}
    for name, expected in EXPECTED_PANELS.items():
        assert len(figures.panel_axes(output["figures"][name])) == expected, name
        _png_is_readable(output["files"][name])
    colorbars = [ax for ax in output["figures"]["fig4"].axes if ax not in
                 figures.panel_axes(output["figures"]["fig4"])]
    assert len(colorbars) == 1
    result, summary = output["evaluation"], output["summary"]
    assert result["num_examples"] == 300 and result["iw_samples"] == 5
    assert f"| L_1 (ELBO) | {result['elbo']:.2f} |" in summary
    assert f"| L_5 | {result['iw_bound']:.2f} |" in summary
    for i, (active, kl) in enumerate(zip(result["active_units_per_layer"],
                                         result["kl_per_layer"])):
        assert f"| z_{i + 1} | {LATENT[i]} | {active} | {kl:.3f} |" in summary
    assert "no class labels" in output["figures"]["fig6"].get_suptitle()
    assert (tmp_path / "analysis" / "summary.md").read_text() == summary


@pytest.mark.slow
def test_analyze_without_diagnostics_skips_curves(trained_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_dir, copy, ignore=shutil.ignore_patterns(
        diagnostics.DIAGNOSTICS_DIR, "analysis"))
    output = analyze_model_dir(copy, iw_samples=2, max_examples=50, pca_examples=50)
    assert set(output["skipped"]) == {"fig2", "fig4"}
    assert set(output["figures"]) == {"fig5", "fig6", "fig9", "layers_keep_top", "layers_interpolation"}
    assert "fig2 skipped" in output["summary"]
    assert len(figures.panel_axes(output["figures"]["fig5"])) == 1  # no history: bars only
    with pytest.raises(model_dir_lib.ModelDirError, match="does not exist"):
        analyze_model_dir(tmp_path / "nothing")


@pytest.mark.slow
def test_analyze_cli(trained_dir, tmp_path):
    """The command line, colouring Fig. 6 by digit with real MNIST where it is available."""
    command = [sys.executable, "-m", "tf_lvae.analyze", f"--model_dir={trained_dir}",
               f"--output_dir={tmp_path}", "--iw_samples=2", "--max_examples=100",
               "--pca_examples=200"]
    if SHARED_MNIST.is_dir():
        command += ["--pca_dataset=mnist", f"--pca_data_dir={SHARED_MNIST}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| L_2 |" in completed.stdout
    for name in figures_files():
        _png_is_readable(tmp_path / name)
    pca = json.loads((tmp_path / "summary.json").read_text())["pca"]
    assert pca == dict(dataset="mnist" if SHARED_MNIST.is_dir() else "binarized_mnist",
                       examples=200, coloured_by_label=SHARED_MNIST.is_dir())


def figures_files():
    from tf_lvae.analysis.report import FIGURE_FILES
    return FIGURE_FILES.values()
