"""Training-time diagnostics: small-K bounds, per-unit KL and image summaries every few epochs.

The Keras TensorBoard callback already logs the train_step metrics (elbo, kl, kl_i, beta,
active_units_i) and, on validation epochs, the same on the eval split (val_*). This module adds
what the paper's analyses need and Keras does not record. Written into model_dir:

    diagnostics/history.jsonl      one record per epoch: that epoch's Keras logs (Fig. 2)
    diagnostics/evaluations.jsonl  one record per diagnostics epoch: L_1 and L_K (small K) on a
                                   fixed subset of the eval split and of the training split,
                                   KL per layer and per unit, active units (Figs. 2, 4, 5)
    logs/diagnostics/              TensorBoard: those bounds and KLs, log-KL histograms per
                                   layer, images of prior samples and reconstructions

`epoch` in a record counts completed epochs (0: before the first update). A resumed run
appends; `read_records` keeps the last record of each epoch.
"""
import json
import os
import pathlib

import keras
import numpy as np
import tensorflow as tf

from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae import data
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.storage import model_dir as model_dir_lib

DIAGNOSTICS_DIR = "diagnostics"
HISTORY_FILE = "history.jsonl"
EVALUATIONS_FILE = "evaluations.jsonl"
TENSORBOARD_RUN = "diagnostics"
# Binarization seed of the training subset of a dynamically binarized data set (fixed, so the
# train L_K of every epoch is measured on the same bits).
TRAIN_SUBSET_BINARIZATION_SEED = 125


def _append_record(path, record):
    """Append one JSON line (a line cut short by a full disk is skipped by read_records)."""
    with model_dir_lib.storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_records(path):
    """Records of a diagnostics .jsonl file sorted by epoch, the last one of each epoch kept.

    A line cut short by a crash is skipped. Returns [] when the file does not exist.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return []
    by_epoch = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        by_epoch[int(record["epoch"])] = record
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def read_history(model_dir):
    """Per-epoch Keras logs: [{epoch, elbo, kl, kl_1.., beta, active_units_1.., val_*}]."""
    return read_records(pathlib.Path(model_dir) / DIAGNOSTICS_DIR / HISTORY_FILE)


def read_evaluations(model_dir):
    """Diagnostics evaluations: [{epoch, iw_samples, eval: {...}, train: {...}}], by epoch.

    eval / train hold elbo (L_1), iw_bound (L_K), num_examples, kl_per_layer [L],
    kl_per_unit [[D_i]] (bottom layer first) and active_units_per_layer [L].
    """
    return read_records(pathlib.Path(model_dir) / DIAGNOSTICS_DIR / EVALUATIONS_FILE)


def tile_images(images, columns, pad=1, pad_value=0.5):
    """[N, h, w, c] in [0, 1] -> one grid image [rows * (h + pad) + pad, ..., c], row-major."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    count, height, width, channels = images.shape
    rows = max(1, -(-count // columns))
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, channels),
                   pad_value, np.float32)
    for index, image in enumerate(images):
        top = pad + (index // columns) * (height + pad)
        left = pad + (index % columns) * (width + pad)
        grid[top:top + height, left:left + width] = image
    return grid


def interleave_reconstructions(images, reconstructions, columns):
    """Rows of data followed by rows of their reconstructions: [2N, h, w, c] for tiling."""
    pairs = []
    for start in range(0, len(images), columns):
        pairs += [images[start:start + columns], reconstructions[start:start + columns]]
    return np.concatenate(pairs, axis=0)


class TrainingDiagnostics(keras.callbacks.Callback):
    """Records per-epoch logs and, every `every_epochs` epochs (and at the last), evaluates.

    Args:
      model_dir: the training run's model_dir.
      subsets: {name: float32 images [N, h, w, c]}, e.g. {"eval": ..., "train": ...}; fixed
        subsets, binarized where the data set is binary.
      every_epochs: evaluation period in epochs (the last epoch is always evaluated).
      iw_samples: K of the L_K computed at each evaluation.
      total_epochs: the run's last epoch, always evaluated (default: that of model.fit).
      num_images: prior samples and reconstructions in each image summary.
    """

    def __init__(self, model_dir, subsets, every_epochs=10, iw_samples=100, total_epochs=None,
                 num_images=64, seed=0, batch_size=256, jit_compile="auto", split_names=None,
                 population=None):
        super().__init__()
        # population(model) -> batch-norm statistics to evaluate with (None: moving averages)
        self.population = population
        if every_epochs < 1 or iw_samples < 1:
            raise ValueError(f"diagnostics need every_epochs >= 1 and iw_samples >= 1, got "
                             f"{every_epochs} and {iw_samples}")
        if "eval" not in subsets:
            raise ValueError(f"subsets needs an 'eval' entry, got {sorted(subsets)}")
        self.model_dir = pathlib.Path(model_dir)
        self.subsets = subsets
        self.split_names = split_names or {name: name for name in subsets}
        self.every_epochs, self.iw_samples = int(every_epochs), int(iw_samples)
        self.total_epochs = total_epochs
        self.num_images, self.seed = num_images, seed
        self.batch_size, self.jit_compile = batch_size, jit_compile
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(
                str(self.model_dir / model_dir_lib.LOG_DIR / TENSORBOARD_RUN))
        return self._writer

    def on_train_begin(self, logs=None):
        # A fresh run (no checkpoint written yet) is evaluated before its first update.
        if not (self.model_dir / model_dir_lib.STATE_FILE).exists():
            self.evaluate(0)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        record = {"epoch": done, **{k: float(v) for k, v in (logs or {}).items()}}
        _append_record(self.model_dir / DIAGNOSTICS_DIR / HISTORY_FILE, record)
        if done % self.every_epochs == 0 or done == (self.total_epochs or
                                                     self.params.get("epochs")):
            self.evaluate(done)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def evaluate(self, epoch):
        """Evaluate the subsets now, append the record, write TensorBoard summaries."""
        record = {"epoch": int(epoch), "iw_samples": self.iw_samples,
                  "splits": dict(self.split_names),
                  "bn_statistics": "population" if self.population else "moving"}
        statistics = self.population(self.model) if self.population else {}
        with batch_norm_statistics.applied(self.model, statistics):
            return self._evaluate(record)

    def _evaluate(self, record):
        # Keep ~10k posterior rows per L_K call: small K allows many examples per batch.
        iw_batch_size = max(1, min(500, 10_000 // self.iw_samples))
        for name, images in self.subsets.items():
            result = evaluation.evaluate_images(
                self.model, images, iw_samples=self.iw_samples, batch_size=self.batch_size,
                iw_batch_size=iw_batch_size, seed=self.seed, jit_compile=self.jit_compile,
                verbose=0)
            record[name] = {key: result[key] for key in (
                "elbo", "iw_bound", "num_examples", "kl_per_layer", "kl_per_unit",
                "active_units_per_layer")}
        _append_record(self.model_dir / DIAGNOSTICS_DIR / EVALUATIONS_FILE, record)
        self._write_summaries(record)
        return record

    def _write_summaries(self, record):
        epoch, k = record["epoch"], self.iw_samples
        with self.writer.as_default(step=epoch):
            for name in self.subsets:
                result = record[name]
                tf.summary.scalar(f"L_1/{name}", result["elbo"])
                tf.summary.scalar(f"L_{k}/{name}", result["iw_bound"])
            evaluated = record["eval"]
            for i, (kl, active, units) in enumerate(zip(
                    evaluated["kl_per_layer"], evaluated["active_units_per_layer"],
                    evaluated["kl_per_unit"])):
                tf.summary.scalar(f"kl_per_layer/layer_{i + 1}", kl)
                tf.summary.scalar(f"active_units/layer_{i + 1}", active)
                tf.summary.histogram(f"log10_kl_per_unit/layer_{i + 1}",
                                     np.log10(np.maximum(units, 1e-8)))
            columns = int(np.ceil(np.sqrt(self.num_images)))
            samples = self.model.sample(self.num_images, seed=self.seed).numpy()
            tf.summary.image("prior_samples", tile_images(samples, columns)[None])
            images = self.subsets["eval"][:self.num_images // 2]
            reconstructions = self.model(images, training=False).numpy()
            pairs = interleave_reconstructions(images, reconstructions, columns)
            tf.summary.image("reconstructions", tile_images(pairs, columns)[None],
                             description="alternating rows: data, posterior-mean reconstruction")
        self.writer.flush()


def subset_indices(num_examples, count, seed=0):
    """Sorted indices of a fixed random subset of `count` examples (all when count >= N).

    Random, not the first `count`: some splits are ordered by class (binarized MNIST's test
    split holds all zeros first).
    """
    if count >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng(seed).permutation(num_examples)[:count])


def _subset(images, count):
    return np.asarray(images[subset_indices(len(images), count)], np.float32)


def from_settings(experiment, model_dir, train_images, eval_images=None, population=None):
    """The diagnostics callbacks an `experiment_config.Experiment` asks for ([] when
    train.diagnostics_every_epochs=0).

    population: `batch_norm_statistics.TrainingSplitStatistics` to evaluate with (None: the
    moving averages).

    Subsets: `train.diagnostics_examples` examples drawn once (seed 0) from the eval split
    and from the training split (binarized once with a fixed seed when the data set binarizes
    dynamically, as the eval splits are).
    """
    train, data_settings = experiment.train, experiment.data
    if not train.diagnostics_every_epochs:
        return []
    count = train.diagnostics_examples
    if eval_images is None:
        eval_images = data.load_arrays(
            data_settings.dataset, data_settings.eval_split, data_dir=data_settings.data_dir,
            num_validation=data_settings.validation_size)[0]
    train_subset = _subset(train_images, count)
    if data.get_spec(data_settings.dataset).binarization == "dynamic":
        uniform = np.random.default_rng(TRAIN_SUBSET_BINARIZATION_SEED).random(
            train_subset.shape, dtype=np.float32)
        train_subset = (uniform < train_subset).astype(np.float32)
    subsets = {"eval": _subset(eval_images, count), "train": train_subset}
    names = {"eval": data_settings.eval_split, "train": data_settings.train_split}
    return [TrainingDiagnostics(
        os.fspath(model_dir), subsets, every_epochs=train.diagnostics_every_epochs,
        iw_samples=train.diagnostics_iw_samples, total_epochs=train.epochs, seed=train.seed,
        batch_size=experiment.eval.batch_size,
        jit_compile="auto", split_names=names,  # XLA on GPU, TF graph on CPU (faster)
        population=population)]
