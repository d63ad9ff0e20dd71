"""keras-tuner searches: search-space mapping, a real tiny search with a diverging trial, resume,
the results table against keras-tuner's own records, the best model, and the CLI."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import keras_tuner
import pytest

from tf_lvae import data
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.tuning import hypermodel
from tf_lvae.tuning import search as tuning
from tf_lvae.storage import checkpoints
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.configs import binarized_mnist, search_space

DIVERGING_LR = 1e6
# The tiny search: 1-epoch trials of a 2-layer 1/16-width LVAE on 1000 training examples; only
# the learning rate varies (one choice diverges), so 3 trials cover the whole space.
SPACE_FILE = '''
from tf_lvae.configs import search_space


def get_config():
    space = search_space.get_config("smoke")
    for name, value in dict(model="lvae", num_layers=2, batch_norm=True, warmup_epochs=0,
                            mc_samples=1, iw_samples=1).items():
        space.hparams[name].type = "fixed"
        space.hparams[name].choices = (value,)
    space.hparams.learning_rate.type = "choice"
    space.hparams.learning_rate.choices = (3e-3, 1e-3, %r)
    space.trial.max_train_examples = 1000
    space.trial.verbose = 0
    space.objective.iw_samples = 5
    space.objective.max_examples = 200
    return space
''' % DIVERGING_LR
CONFIG_FLAGS = ["--config.train.jit_compile=False"]


def tiny_base_config():
    config = binarized_mnist.get_config()
    config.train.jit_compile = False  # saves a compile per 1-epoch trial
    return config


def load_space(path):
    spec = importlib.util.spec_from_file_location("tiny_space", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def snapshot(model_dir):
    """{file path: mtime} of every trial's keras-tuner record and checkpoint files."""
    root = os.path.join(model_dir, tuning.PROJECT)
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(root) for f in files
            if f == "trial.json" or d.endswith("checkpoints")}


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A real search run three times in one dir: 2 trials, extended to 3, rerun unchanged."""
    root = tmp_path_factory.mktemp("tune")
    space_file = root / "tiny_space.py"
    space_file.write_text(SPACE_FILE)
    model_dir = str(root / "search")
    space = load_space(space_file)
    _, first = tuning.run_search(tiny_base_config(), space, model_dir, max_trials=2, verbose=0)
    after_first = snapshot(model_dir)
    tuner, extended = tuning.run_search(tiny_base_config(), space, model_dir, max_trials=3,
                                        verbose=0)
    after_extended = snapshot(model_dir)
    _, rerun = tuning.run_search(tiny_base_config(), space, model_dir, max_trials=3, verbose=0)
    return dict(model_dir=model_dir, space_file=space_file, space=space, tuner=tuner,
                first=first, results=extended, rerun=rerun, after_first=after_first,
                after_extended=after_extended, after_rerun=snapshot(model_dir))


def test_search_space_declares_every_knob_and_maps_it_into_the_experiment_config():
    space, base = search_space.get_config(), binarized_mnist.get_config()
    hp = keras_tuner.HyperParameters()
    declared = hypermodel.declare(hp, space)
    assert list(declared) == list(hypermodel.ORDER)
    assert hp.get("model") == "lvae" and isinstance(hp.get("batch_norm"), bool)
    values = dict(model="vae", num_layers=3, width=0.5, batch_norm=False, warmup_epochs=5,
                  learning_rate=2e-3, mc_samples=1, iw_samples=5)
    config = hypermodel.trial_config(base, space, values)
    assert config.model.inference == "vae" and not config.model.batch_norm
    assert tuple(config.model.latent_sizes) == (32, 16, 8)
    assert tuple(config.model.hidden_sizes) == (256, 128, 64)
    assert (config.train.warmup_epochs, config.train.learning_rate) == (5, 2e-3)
    assert (config.train.mc_samples, config.train.iw_samples) == (1, 5)
    assert config.train.epochs == space.trial.epochs
    # Trials never train on validation nor look at test.
    assert (config.data.train_split, config.data.eval_split) == ("train", "validation")
    assert base.data.eval_split == "test"  # the base config is not modified


@pytest.mark.parametrize("name, field, value, message", [
    ("model", "type", "gaussian", "type must be one of"),
    ("learning_rate", "field", "train.no_such_field", "must name an experiment-config field"),
    ("learning_rate", "min", 1.0, r"min \(1.0\) must be <= max"),
    ("warmup_epochs", "choices", (), "needs at least one"),
])
def test_bad_search_space_entries_are_named(name, field, value, message):
    space = search_space.get_config()
    space.hparams[name][field] = value
    with pytest.raises(hypermodel.SearchSpaceError, match=message) as error:
        hypermodel.LVAEHyperModel(binarized_mnist.get_config(), space)
    assert f"hparams.{name}" in str(error.value)


@pytest.mark.slow
def test_tiny_search_records_the_diverging_trial_as_failed_and_completes(search):
    rows = search["results"]["rows"]
    assert len(rows) == 3
    by_lr = {row["learning_rate"]: row for row in rows}
    assert set(by_lr) == {3e-3, 1e-3, DIVERGING_LR}
    failed = by_lr[DIVERGING_LR]
    assert failed["status"] == "FAILED" and failed["val_iw_bound"] is None
    assert "diverged" in failed["error"]
    for lr in (3e-3, 1e-3):
        assert by_lr[lr]["status"] == "COMPLETED"
        assert -560 < by_lr[lr]["val_iw_bound"] < -100  # a real bound in nats
        assert by_lr[lr]["val_iw_bound"] >= by_lr[lr]["val_elbo"] - 1.0  # L_5 vs L_1
        assert by_lr[lr]["seconds"] > 0 and by_lr[lr]["epochs"] == 1
    # keras-tuner's own record of the trial says the same.
    with open(os.path.join(search["model_dir"], tuning.PROJECT, f"trial_{failed['trial']}",
                           "trial.json")) as handle:
        assert json.load(handle)["status"] == "FAILED"


@pytest.mark.slow
def test_results_table_best_trial_is_the_highest_bound_and_keras_tuners_best(search):
    results = search["results"]
    completed = [r for r in results["rows"] if r["status"] == "COMPLETED"]
    best_row = max(completed, key=lambda r: r["val_iw_bound"])
    assert results["best_trial"] == best_row["trial"]
    best_trial = search["tuner"].oracle.get_best_trials(1)[0]
    assert best_trial.trial_id == best_row["trial"]
    assert best_trial.score == pytest.approx(best_row["val_iw_bound"])
    with open(os.path.join(search["model_dir"], "results.json")) as handle:
        assert json.load(handle)["best_trial"] == best_row["trial"]
    with open(os.path.join(search["model_dir"], "results.csv")) as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [r["trial"] for r in csv_rows] == [r["trial"] for r in results["rows"]]
    for csv_row, row in zip(csv_rows, results["rows"]):
        assert csv_row["status"] == row["status"]
        if row["val_iw_bound"] is not None:
            assert float(csv_row["val_iw_bound"]) == pytest.approx(row["val_iw_bound"])


@pytest.mark.slow
def test_best_model_is_a_model_dir_that_loads_and_reproduces_the_objective(search):
    best_dir = search["results"]["best_dir"]
    assert best_dir == os.path.join(search["model_dir"], tuning.BEST_DIR)
    model, config, epochs = checkpoints.load_model(best_dir)
    assert epochs == 1 and model.spec.latent_sizes == (4, 2)
    assert config["data"]["eval_split"] == "test"  # evaluates like any trained model
    space = search["space"]
    # as the tuner scores (and tf_lvae.evaluate evaluates): population BN statistics
    assert batch_norm_statistics.for_evaluation(model, config) == "population"
    images = data.load_arrays("binarized_mnist", "validation")[0][:space.objective.max_examples]
    result = evaluation.evaluate_images(
        model, images, iw_samples=space.objective.iw_samples,
        iw_batch_size=space.objective.iw_batch_size, chunk_size=space.objective.iw_samples,
        seed=space.objective.seed, verbose=0)
    # Same code, same examples and K; not bit-equal: under XLA, evaluate_images' draws in a
    # process depend on how often that compiled function ran before (seed is not stateless).
    assert result["iw_bound"] == pytest.approx(search["results"]["best_score"], abs=1.0)
    provenance = model_dir_lib.read_json(os.path.join(best_dir, "tuning.json"))
    assert provenance["trial_id"] == search["results"]["best_trial"]


@pytest.mark.slow
def test_rerun_with_the_same_dir_runs_only_new_trials(search):
    assert len(search["first"]["rows"]) == 2
    # Extending to max_trials=3 left the two finished trials' records and checkpoints alone...
    for path, mtime in search["after_first"].items():
        assert search["after_extended"][path] == mtime, path
    assert len(search["after_extended"]) > len(search["after_first"])
    # ... and a rerun with the same max_trials trains nothing.
    assert search["after_rerun"] == search["after_extended"]
    assert search["rerun"]["rows"] == search["results"]["rows"]


@pytest.mark.slow
def test_resuming_with_another_search_space_is_refused(search):
    space = load_space(search["space_file"])
    space.objective.iw_samples = 50
    with pytest.raises(tuning.SearchError, match="different search_space"):
        tuning.run_search(tiny_base_config(), space, search["model_dir"], verbose=0)


def test_tune_shortcut_flags_mean_what_they_mean_to_train_in_every_trial(tmp_path):
    from tf_lvae import tune
    space, base = search_space.get_config(), tiny_base_config()
    tune.apply_shortcuts(base, space, epochs=3, model="vae", layers=2, batch_size=64)
    model = hypermodel.LVAEHyperModel(base, space)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare(hp, space)
    for seed in range(8):  # whatever values the tuner draws
        values = {entry.name: entry.random_sample(seed) for entry in hp.space}
        config = hypermodel.trial_config(base, space, values)
        assert config.train.epochs == 3 and config.model.inference == "vae"
        assert len(config.model.latent_sizes) == 2 and config.train.batch_size == 64
    hyperband = tuning.make_tuner(model, str(tmp_path / "h"), "hyperband", max_trials=4)
    assert hyperband.oracle.max_epochs == 3


def test_hyperband_and_bayesian_tuners_search_the_same_space(tmp_path):
    model = hypermodel.LVAEHyperModel(tiny_base_config(), search_space.get_config())
    hyperband = tuning.make_tuner(model, str(tmp_path / "h"), "hyperband", max_trials=4)
    assert isinstance(hyperband.oracle, keras_tuner.oracles.HyperbandOracle)
    assert hyperband.oracle.max_trials == 4
    assert hyperband.oracle.max_epochs == search_space.get_config().trial.epochs
    assert set(hyperband.oracle.get_space().values) == set(hypermodel.ORDER)
    with pytest.raises(tuning.SearchError, match="unknown tuner"):
        tuning.make_tuner(model, str(tmp_path / "x"), "grid")
    pytest.importorskip("sklearn", reason="--tuner=bayesian needs keras-tuner[bayesian]")
    bayesian = tuning.make_tuner(model, str(tmp_path / "b"), "bayesian", max_trials=4)
    assert isinstance(bayesian.oracle, keras_tuner.oracles.BayesianOptimizationOracle)
    assert set(bayesian.oracle.get_space().values) == set(hypermodel.ORDER)


@pytest.mark.slow
def test_cli_resumes_the_finished_search_and_prints_its_table(search):
    # --epochs=1 is the tiny space's trial.epochs: were it the base config's train.epochs,
    # the search would differ from the one in model_dir and be refused.
    command = [sys.executable, "-m", "tf_lvae.tune", "--dataset=binarized_mnist", "--epochs=1",
               f"--search_space={search['space_file']}", "--max_trials=3",
               f"--model_dir={search['model_dir']}", *CONFIG_FLAGS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    best = search["results"]["best_trial"]
    assert f"best trial: {best}" in done.stdout
    assert "FAILED" in done.stdout and "diverged" in done.stdout
    assert snapshot(search["model_dir"]) == search["after_extended"]  # nothing retrained
