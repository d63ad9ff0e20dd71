"""Trained models that ship inside the package: weights, architecture and provenance.

    model = tf_lvae.pretrained("mnist_lvae5")          # a HierarchicalVAE, ready to use
    python -m tf_lvae.export --pretrained=mnist_lvae5 --export_dir=exports/mnist_lvae5
    python -m tf_lvae.evaluate --pretrained=mnist_lvae5 --data_dir=../shared/data/mnist

Each model is two files in tf_lvae/storage/pretrained_models/: NAME.npz (every weight by its
Keras path, float32, with the population batch-norm statistics of its training set as the
moving statistics, so no training data is needed to use it) and NAME.json (the ModelSpec, the
training config, epochs, the test bounds `tf_lvae.evaluate` gave, the machine and the
commands).
`tools/package_pretrained.py` writes both from a finished model_dir.
"""
import json
import pathlib

import numpy as np

from tf_lvae.model.hierarchical_vae import HierarchicalVAE
from tf_lvae.model.spec import ModelSpec
from tf_lvae.storage import checkpoints
from tf_lvae.storage import model_dir as model_dir_lib

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent / "pretrained_models"


def available(directory=PRETRAINED_DIR):
    """Names of the shipped models."""
    return sorted(p.stem for p in pathlib.Path(directory).glob("*.json"))


def _paths(name, directory):
    directory = pathlib.Path(directory)
    weights, card = directory / f"{name}.npz", directory / f"{name}.json"
    if not (weights.is_file() and card.is_file()):
        raise ValueError(f"no pretrained model named {name!r}; shipped: "
                         f"{', '.join(available(directory)) or 'none'}")
    return weights, card


def model_card(name, directory=PRETRAINED_DIR):
    """The provenance of a shipped model: spec, config, epochs, test bounds, machine, commands."""
    return json.loads(_paths(name, directory)[1].read_text())


def _key(variable):
    return checkpoints.weight_key(variable)


def load(name, directory=PRETRAINED_DIR):
    """The shipped model `name` as a HierarchicalVAE in inference-ready state."""
    weights_path, _ = _paths(name, directory)
    card = model_card(name, directory)
    model = HierarchicalVAE.from_spec(ModelSpec(**card["model_spec"]))
    with np.load(weights_path) as weights:
        missing = [_key(v) for v in model.weights if _key(v) not in weights.files]
        if missing or len(weights.files) != len(model.weights):
            raise ValueError(f"{weights_path} does not match its model card: missing "
                             f"{missing[:3]}, {len(weights.files)} arrays for "
                             f"{len(model.weights)} weights")
        for variable in model.weights:
            variable.assign(weights[_key(variable)])
    return model


def save(model, name, card, directory=PRETRAINED_DIR):
    """Write `model` (its statistics as they are now) and its card as pretrained `name`,
    each file atomically."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {_key(v): v.numpy().astype(np.float32) for v in model.weights}
    target = directory / f"{name}.npz"
    model_dir_lib.write_atomically(target, lambda handle: np.savez_compressed(handle, **arrays))
    model_dir_lib.write_json_atomically(directory / f"{name}.json", card)
    return target
