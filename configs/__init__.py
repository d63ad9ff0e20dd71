"""Experiment configs, one file per data set: `get_config()` returns an ml_collections ConfigDict.

This folder installs as the package `tf_lvae.configs`; `python -m tf_lvae.train --dataset=NAME`
picks `NAME.py` here, and `--config=FILE` any other file with the same `get_config()`.
"""
import pathlib

CONFIG_DIR = pathlib.Path(__file__).resolve().parent


NOT_EXPERIMENTS = ("base", "search_space")  # helpers and the tuner's search space


def config_file(name):
    """Path of the config file for `name` (a data set or 'quick'); ValueError if none."""
    path = CONFIG_DIR / f"{name}.py"
    if name.startswith("_") or name in NOT_EXPERIMENTS or not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.py")
                       if not p.stem.startswith("_") and p.stem not in NOT_EXPERIMENTS)
        raise ValueError(f"no config named {name!r}; expected one of {', '.join(known)}")
    return path
