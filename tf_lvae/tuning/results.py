"""The summary table of a keras-tuner search: one row per trial, as text, CSV and JSON.

Rows are read from keras-tuner's own trial records (status, hyperparameters, score) plus the
trial's run.json (seconds, error), so the table is what the tuner itself decided.
"""
import csv
import io
import math
import os

import keras_tuner

from tf_lvae.storage import model_dir as model_dir_lib

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RUN_FILE = "run.json"  # per trial: seconds, model_dir, error (written by tuning)
COMPLETED = keras_tuner.engine.trial.TrialStatus.COMPLETED


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _row(tuner, trial, names, default_epochs):
    values = trial.hyperparameters.values
    run = model_dir_lib.read_json(os.path.join(tuner.get_trial_dir(trial.trial_id), RUN_FILE),
                               default={})
    completed = trial.status == COMPLETED
    metrics = trial.metrics

    def last(name):
        return metrics.get_last_value(name) if completed and metrics.exists(name) else None

    row = dict(trial=trial.trial_id, status=trial.status,
               val_iw_bound=trial.score if completed else None, val_elbo=last("val_elbo"),
               seconds=run.get("seconds"), epochs=values.get("tuner/epochs", default_epochs),
               skipped_steps=None if last("skipped_steps") is None
               else int(last("skipped_steps")))  # keras-tuner stores metrics as floats
    if "tuner/epochs" in values:  # Hyperband: the trial whose training this one continued
        row["from_trial"] = values.get("tuner/trial_id")
    row.update({name: values.get(name) for name in names})
    row["error"] = "" if completed else (run.get("error") or _last_line(trial.message))
    return row


def summarize(tuner, names, space, best_dir=None, stopped=None):
    """Results dict: objective, best trial id and score, best_dir, rows (in trial order)."""
    oracle = tuner.oracle
    trials = sorted(oracle.trials.values(), key=lambda t: int(t.trial_id))
    rows = [_row(tuner, t, names, space.trial.epochs) for t in trials]
    best = [t for t in oracle.get_best_trials(1) if t.status == COMPLETED]
    return dict(
        objective=dict(name=oracle.objective.name, direction=oracle.objective.direction,
                       split="validation", iw_samples=space.objective.iw_samples,
                       max_examples=space.objective.max_examples),
        tuner=type(oracle).__name__,
        best_trial=best[0].trial_id if best else None,
        best_score=best[0].score if best else None,
        best_dir=best_dir, stopped=stopped,
        columns=list(rows[0]) if rows else [], rows=rows)


def write(results, model_dir):
    """Write model_dir/results.json and results.csv (one line per trial)."""
    model_dir_lib.write_json_atomically(os.path.join(model_dir, RESULTS_JSON), results)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=results["columns"])
    writer.writeheader()
    for row in results["rows"]:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    model_dir_lib.write_text_atomically(os.path.join(model_dir, RESULTS_CSV), table.getvalue())


def _cell(value, column=""):
    if value is None:
        return "-"
    if isinstance(value, float):
        if column.startswith("val_") and math.isfinite(value):
            return f"{value:.2f}"  # nats
        return f"{value:.4g}"
    return str(value)


def format_table(results):
    """The rows as an aligned text table, the best trial marked with '*'."""
    columns = [c for c in results["columns"] if c != "error"]
    cells = [[("*" if row["trial"] == results["best_trial"] else " ") + _cell(row["trial"])]
             + [_cell(row[c], c) for c in columns[1:]] for row in results["rows"]]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    objective = results["objective"]
    lines.append(f"objective: {objective['name']} (L_{objective['iw_samples']} on validation, "
                 f"{objective['direction']}); best trial: {results['best_trial']} "
                 f"({_cell(results['best_score'], 'val_')}) -> {results['best_dir']}")
    failed = [r for r in results["rows"] if r["error"]]
    lines += [f"trial {r['trial']} {r['status']}: {r['error']}" for r in failed]
    if results["stopped"]:
        lines.append(f"search stopped early: {results['stopped']}")
    return "\n".join(lines)
