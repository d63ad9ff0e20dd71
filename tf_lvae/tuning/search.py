"""Hyperparameter search with keras-tuner: `run_search(base_config, space, model_dir)`.

    model_dir/
      search_config.json   the experiment config and search space the search was started with
      search/              keras-tuner's project (oracle.json, tuner0.json, trial_<id>/trial.json)
        trial_<id>/model/  each trial as a normal tf_lvae model_dir (resumable)
        trial_<id>/run.json  seconds the trial took, its model_dir, the error of a failed trial
      results.csv, results.json   the summary table (tf_lvae.tuning.results)
      best/                the best trial's model_dir, ready for tf_lvae.evaluate / export

Rerunning with the same model_dir reloads keras-tuner's state (overwrite=False): finished
trials are not rerun, an interrupted trial resumes from its checkpoint, and a larger
max_trials adds trials. A search holds model_dir's lock (tf_lvae.storage.lock) and every
trial its own model_dir's; a storage fault (no space, read-only) stops the search with
model_dir.StorageError instead of failing one trial after another.
"""
import json
import os
import pathlib
import shutil
import time

import keras
import keras_tuner
from absl import logging

from tf_lvae.tuning import hypermodel as hypermodel_lib
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.storage import lock as model_dir_lock
from tf_lvae.tuning import results as tuning_results
from tf_lvae.storage import checkpoints

TUNERS = ("random", "bayesian", "hyperband")
PROJECT = "search"
BEST_DIR = "best"
SEARCH_CONFIG_FILE = "search_config.json"
RUN_FILE = tuning_results.RUN_FILE
TRIAL_MODEL_DIR = "model"


class SearchError(ValueError):
    """A search that cannot start or resume as asked (e.g. another search in model_dir)."""


class _StopSearch(keras_tuner.errors.FatalError):
    """Raised out of a trial to stop the search; its __cause__ is the error to report."""


class _ModelDirTrials:
    """Tuner mixin: every trial trains into its own tf_lvae model_dir under the trial folder.

    Replaces keras-tuner's build -> fit -> save-weights cycle, which would keep a second copy
    of every model as .h5 weights: the model_dir is the trial's checkpoint.
    """

    def trial_model_dir(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), TRIAL_MODEL_DIR)

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        model_dir = self.trial_model_dir(trial.trial_id)
        parent = hp.values.get("tuner/trial_id")
        keras.backend.clear_session()
        start = time.time()
        error = None
        try:
            if parent is not None and not os.path.exists(model_dir):
                # Hyperband: continue the parent trial's training from its last epoch.
                model_dir_lib.copy_model_dir(self.trial_model_dir(parent), model_dir)
            return self.hypermodel.fit(hp, None, model_dir=model_dir,
                                       epochs=hp.values.get("tuner/epochs"))
        except (model_dir_lib.StorageError, model_dir_lock.ModelDirBusyError) as exception:
            error = f"{type(exception).__name__}: {exception}"
            raise _StopSearch(str(exception)) from exception  # no other trial would fare better
        except Exception as exception:  # recorded, then keras-tuner marks the trial failed
            error = f"{type(exception).__name__}: {exception}"
            raise
        finally:
            try:
                model_dir_lib.write_json_atomically(
                    os.path.join(self.get_trial_dir(trial.trial_id), RUN_FILE),
                    dict(seconds=round(time.time() - start, 2), model_dir=model_dir,
                         error=error))
            except model_dir_lib.StorageError as run_error:  # the trial's own error comes first
                logging.error("%s", run_error)

    def load_model(self, trial):
        return checkpoints.load_model(self.trial_model_dir(trial.trial_id))[0]


class RandomSearch(_ModelDirTrials, keras_tuner.RandomSearch):
    pass


class BayesianOptimization(_ModelDirTrials, keras_tuner.BayesianOptimization):
    pass


class Hyperband(_ModelDirTrials, keras_tuner.Hyperband):
    pass


def make_tuner(hypermodel, model_dir, kind=None, max_trials=None, verbose=1):
    """The keras-tuner Tuner of `kind` (default: the space's tuner.kind) over `hypermodel`."""
    space = hypermodel.space
    kind = kind or space.tuner.kind
    if kind not in TUNERS:
        raise SearchError(f"unknown tuner {kind!r}; expected one of {', '.join(TUNERS)}")
    max_trials = max_trials or space.tuner.max_trials
    common = dict(hypermodel=hypermodel, directory=str(model_dir), project_name=PROJECT,
                  overwrite=False, seed=space.tuner.seed or None,
                  objective=keras_tuner.Objective(hypermodel_lib.OBJECTIVE, direction="max"),
                  max_consecutive_failed_trials=space.tuner.max_consecutive_failed_trials)
    if kind == "random":
        tuner = RandomSearch(max_trials=max_trials, **common)
    elif kind == "bayesian":
        try:
            import sklearn  # noqa: F401  keras-tuner's Gaussian process needs it
        except ImportError as error:
            raise SearchError("--tuner=bayesian needs scikit-learn: pip install "
                              "'keras-tuner[bayesian]' (or scikit-learn)") from error
        tuner = BayesianOptimization(max_trials=max_trials, **common)
    else:
        tuner = Hyperband(max_epochs=space.trial.epochs, factor=space.tuner.hyperband_factor,
                          **common)
        tuner.oracle.max_trials = max_trials  # Oracle.create_trial stops there
    tuner.oracle.verbose = verbose
    return tuner


def _check_same_search(model_dir, record):
    """Refuse to resume a search with another data set, space or tuner (max_trials may grow)."""
    path = pathlib.Path(model_dir) / SEARCH_CONFIG_FILE
    existing = model_dir_lib.read_json(path)
    if existing is None:
        if (pathlib.Path(model_dir) / PROJECT).exists():
            raise SearchError(f"{model_dir}/{PROJECT} exists but {SEARCH_CONFIG_FILE} does not;"
                              " use a new --model_dir")
        pathlib.Path(model_dir).mkdir(parents=True, exist_ok=True)
        model_dir_lib.write_json_atomically(path, record)
        return
    if existing != record:
        changed = sorted(k for k in set(existing) | set(record)
                         if existing.get(k) != record.get(k))
        raise SearchError(f"{model_dir} holds a search with a different {', '.join(changed)}; "
                          "rerun with the same settings to resume (only max_trials may change)"
                          " or use a new --model_dir")


def _search_record(base_config, space, kind):
    space_dict = space.to_dict()
    space_dict["tuner"] = {k: v for k, v in space_dict["tuner"].items() if k != "max_trials"}
    space_dict["tuner"]["kind"] = kind
    # JSON round trip so tuples compare equal to the lists read back from the file.
    return json.loads(json.dumps(dict(experiment_config=base_config.to_dict(),
                                      search_space=space_dict)))


def export_best(tuner, model_dir, base_config):
    """Copy the best completed trial's model_dir to model_dir/best; returns its path or None.

    The copy's config evaluates on the experiment config's eval_split (normally 'test') by
    default, like any trained model; best/tuning.json records where it came from.
    """
    best = [t for t in tuner.oracle.get_best_trials(1)
            if t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED]
    if not best:
        return None
    trial = best[0]
    target = pathlib.Path(model_dir) / BEST_DIR
    shutil.rmtree(pathlib.Path(model_dir) / f".{BEST_DIR}.tmp", ignore_errors=True)  # old name
    with model_dir_lib.atomic_directory(target) as staging:
        model_dir_lib.copy_tree(tuner.trial_model_dir(trial.trial_id), staging)
        config = model_dir_lib.read_json(staging / model_dir_lib.CONFIG_FILE)
        config["data"]["eval_split"] = base_config.data.eval_split
        model_dir_lib.write_json_atomically(staging / model_dir_lib.CONFIG_FILE, config)
        model_dir_lib.write_json_atomically(staging / "tuning.json", dict(
            trial_id=trial.trial_id, search_dir=str(pathlib.Path(model_dir).resolve()),
            objective=hypermodel_lib.OBJECTIVE, score=trial.score,
            hyperparameters=trial.hyperparameters.values))
    return str(target)


def run_search(base_config, space, model_dir, kind=None, max_trials=None, verbose=1):
    """Run (or resume) a keras-tuner search; returns (tuner, results dict).

    Args:
      base_config: experiment ConfigDict (e.g. `configs/binarized_mnist.py`) trials start from.
      space: search-space ConfigDict (`configs/search_space.py`).
      model_dir: where the search, the results table and the best model go.
      kind: random | bayesian | hyperband (default: space.tuner.kind).
      max_trials: default space.tuner.max_trials.

    The results dict is `tuning_results.summarize(...)`: objective, best trial, one row per
    trial; it is also written to model_dir/results.{json,csv} and printed when verbose.
    """
    hypermodel = hypermodel_lib.LVAEHyperModel(base_config, space)
    kind = kind or space.tuner.kind
    with model_dir_lock.hold(model_dir, purpose="tuning"):
        model_dir_lib.remove_leftovers(model_dir)
        _check_same_search(model_dir, _search_record(base_config, space, kind))
        tuner = make_tuner(hypermodel, model_dir, kind, max_trials, verbose)
        stopped = None
        try:
            tuner.search(verbose=verbose)
        except _StopSearch as error:
            raise error.__cause__ from None
        except RuntimeError as error:  # keras-tuner's limit on consecutive failed trials
            if "consecutive failures" not in str(error):
                raise
            stopped = str(error).splitlines()[0]
            logging.warning("search stopped: %s", stopped)
        best_dir = export_best(tuner, model_dir, base_config)
        results = tuning_results.summarize(tuner, hypermodel_lib.hparam_names(space), space,
                                           best_dir=best_dir, stopped=stopped)
        tuning_results.write(results, model_dir)
    if verbose:
        print(tuning_results.format_table(results))
    return tuner, results
