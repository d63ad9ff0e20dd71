"""Tests of the reproduction runner (tf_lvae.reproduction, tools/reproduce.py).

A real 2-cell grid (tiny VAE and LVAE, 1 epoch on 1,000 binarized MNIST images) runs once
through the library; the command line then reruns it and must skip both cells.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tf_lvae.analysis import figures
from tf_lvae.analysis import reproduction

ROOT = Path(__file__).resolve().parents[1]
K, EXAMPLES = 5, 100
TINY = ["--latent_sizes=8,4", "--hidden_sizes=32,16", "--override=data.num_validation=59000",
        "--override=train.batch_size=100", "--override=train.verbose=0",
        "--override=train.diagnostics_every_epochs=0", "--override=train.jit_compile=False"]


def tiny_base_config():
    config = reproduction.load_config("binarized_mnist")
    config.model.latent_sizes, config.model.hidden_sizes = (8, 4), (32, 16)
    config.data.num_validation = 59000  # train on the first 1,000 images
    config.train.batch_size, config.train.verbose = 100, 0
    config.train.diagnostics_every_epochs = 0
    config.train.jit_compile = False
    return config


SETTINGS = reproduction.GridSettings(dataset="binarized_mnist", epochs=1, warmup_epochs=1,
                                     iw_samples=K, eval_split="test",
                                     max_eval_examples=EXAMPLES)
CELLS = [reproduction.Cell("VAE", 2, 0), reproduction.Cell("LVAE+BN+WU", 2, 0)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("grid")
    lines = []
    results, table = reproduction.run_grid(tiny_base_config(), CELLS, SETTINGS, output_dir,
                                           log=lines.append)
    return output_dir, results, table, lines


@pytest.mark.slow
def test_grid_trains_and_evaluates_each_cell(grid):
    output_dir, results, _, lines = grid
    assert [(r["variant"], r["layers"]) for r in results] == [("VAE", 2), ("LVAE+BN+WU", 2)]
    assert not any(r["skipped"] for r in results) and all("done" in line for line in lines)
    for result, cell in zip(results, CELLS):
        cell_dir = output_dir / cell.path
        spec = json.loads((cell_dir / "model_spec.json").read_text())
        inference, batch_norm, _ = reproduction.VARIANTS[cell.variant]
        assert (spec["inference"], spec["batch_norm"]) == (inference, batch_norm)
        assert spec["latent_sizes"] == [8, 4]
        # The table's numbers are the cell's own tf_lvae.evaluate result.
        evaluation = json.loads((cell_dir / f"evaluation_test_K{K}.json").read_text())
        assert evaluation["num_examples"] == EXAMPLES and evaluation["epochs_trained"] == 1
        assert result["iw_bound"] == evaluation["iw_bound"]
        assert result["elbo"] == evaluation["elbo"]
        assert result["epochs"] == 1 and result["train_seconds"] > 0
        assert np.isfinite(result["train_elbo"])


@pytest.mark.slow
def test_table_has_paper_layout_and_provenance(grid):
    output_dir, results, table, _ = grid
    assert (output_dir / "table.md").read_text() == table
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| latent sizes |"))
    assert header.split(" | ")[1:3] == ["VAE", "LVAE+BN+WU"]
    row = next(line for line in lines if line.startswith("| 8-4 | "))  # the first table: L_K
    assert row.split(" | ")[1:3] == [f"{r['iw_bound']:.2f}" for r in results]
    hardware = reproduction.hardware_description()
    for row in [line for line in lines if line.startswith("| 8-4 | ")]:
        # every row: data set, binarization, K, epochs, seed(s), wall time, hardware
        assert "binarized_mnist | static" in row and f"| {K} | 1 |" in row, row
        assert hardware in row and ("m" in row.split(" | ")[-2]), row
    assert f"the first {EXAMPLES} examples" in table


@pytest.mark.slow
def test_fig3_is_a_readable_three_panel_png(grid):
    output_dir, results, _, _ = grid
    image = matplotlib.image.imread(output_dir / "fig3.png")
    assert image.shape[0] > 300 and image.shape[1] > 900 and np.std(image[..., :3]) > 0.02
    figure = figures.grid_figure(reproduction.aggregate(results), K)
    assert len(figures.panel_axes(figure)) == 3


@pytest.mark.slow
def test_rerun_from_the_command_line_skips_finished_cells(grid):
    output_dir, results, _, _ = grid
    stamps = {p: p.stat().st_mtime_ns for p in output_dir.rglob("*") if p.is_file()
              and ("checkpoints" in p.parts or p.name == reproduction.RESULT_FILE)}
    command = [sys.executable, str(ROOT / "tools" / "reproduce.py"),
               "--dataset=binarized_mnist", "--epochs=1", "--variants=VAE,LVAE+BN+WU",
               "--layers=2", f"--iw_samples={K}", f"--max_eval_examples={EXAMPLES}",
               "--warmup_epochs=1", f"--output_dir={output_dir}", *TINY]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    progress = [line for line in completed.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 2 and all("skipped (finished earlier)" in p for p in progress)
    assert len(stamps) > 2 and stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert f"{results[1]['iw_bound']:.2f}" in completed.stdout  # the table, printed again
    assert "Changed from configs/binarized_mnist.py: `--latent_sizes=8,4`" in completed.stdout


def test_grid_cells_and_cell_config():
    cells = reproduction.grid_cells(["VAE", "LVAE+BN+WU"], [1, 2], [0, 1])
    assert reproduction.Cell("LVAE+BN+WU", 1, 0) not in cells  # same model as the VAE
    assert len(cells) == 6 and cells[0] == reproduction.Cell("VAE", 1, 0)
    assert len(reproduction.grid_cells(["LVAE+BN+WU"], [1], [0], lvae_one_layer=True)) == 1
    with pytest.raises(ValueError, match="unknown variants"):
        reproduction.grid_cells(["VAE+XX"], [1], [0])
    with pytest.raises(ValueError, match="layers must be in 1..5"):
        reproduction.grid_cells(["VAE"], [6], [0])
    base = reproduction.load_config("mnist")
    vae = reproduction.cell_config(base, reproduction.Cell("VAE", 3, 7), SETTINGS)
    assert (vae.model.inference, vae.model.batch_norm, vae.train.warmup_epochs) == ("vae",
                                                                                     False, 0)
    assert tuple(vae.model.latent_sizes) == (64, 32, 16) and vae.train.seed == 7
    lvae = reproduction.cell_config(base, reproduction.Cell("LVAE+BN+WU", 5, 0), SETTINGS)
    assert (lvae.model.inference, lvae.model.batch_norm, lvae.train.warmup_epochs) == (
        "lvae", True, 1)
    assert tuple(base.model.latent_sizes) == (64, 32, 16, 8, 4)  # base left unchanged
    assert reproduction.default_warmup_epochs(base, 50) == 5  # the paper's 200 of 2000


def test_seeds_are_averaged_with_sample_std():
    def result(seed, value):
        return dict(variant="VAE", layers=1, seed=seed, latent_sizes=[64], elbo=value,
                    iw_bound=value + 5, train_elbo=None, train_seconds=60.0, eval_seconds=6.0,
                    epochs=10, hardware="cpu", num_examples=100, iw_samples=K,
                    kl_per_layer=[1.0], active_units_per_layer=[3], dataset="mnist",
                    binarization="dynamic", model_dir="d")
    rows = reproduction.aggregate([result(0, -90.0), result(1, -92.0)])
    assert rows[0]["elbo"] == (-91.0, pytest.approx(np.sqrt(2.0)), 2)
    assert rows[0]["train_elbo"] is None and rows[0]["seconds"] == 132.0
    settings = reproduction.GridSettings("mnist", 10, 1, K, "test")
    table = reproduction.markdown_table([result(0, -90.0), result(1, -92.0)], settings,
                                        ["VAE", "LVAE+BN+WU"])
    assert "| 64 | -86.00 ± 1.41 (n=2) | — |" in table
    assert "seed 123" in table and "| 0, 1 | 2m12s | cpu |" in table
