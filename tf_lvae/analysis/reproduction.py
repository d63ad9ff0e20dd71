"""The paper's experiment grid: VAE, VAE+BN, VAE+BN+WU and LVAE+BN+WU with 1..5 layers.

`run_grid` trains every cell with `tf_lvae.training.loop.train` into its own model_dir
(OUTPUT_DIR/<variant>/<L>_layers/seed_<s>), evaluates it with
`tf_lvae.evaluation.trained.evaluate_model_dir` (test L_1 and L_K) and rewrites, after every cell,
OUTPUT_DIR/table.md (Table 2 layout), results.json and fig3.png. A cell whose
reproduce_result.json matches the requested settings is not rerun; an interrupted cell
resumes from its checkpoint. `tools/reproduce.py` is the command line.

An LVAE with one stochastic layer is the same model as a VAE (the paper's Table 2 prints
"-"), so that cell is left out unless asked for.
"""
import dataclasses
import importlib.util
import os
import pathlib
import platform
import time

import keras
import numpy as np

from tf_lvae import configs
from tf_lvae import data
from tf_lvae import experiment_config
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.storage import lock as model_dir_lock

VARIANTS = {  # name: (inference, batch_norm, warm-up)
    "VAE": ("vae", False, False),
    "VAE+BN": ("vae", True, False),
    "VAE+BN+WU": ("vae", True, True),
    "LVAE+BN+WU": ("lvae", True, True),
}
RESULT_FILE = "reproduce_result.json"
TIMING_FILE = "reproduce_timing.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    variant: str
    layers: int
    seed: int

    @property
    def path(self):
        slug = self.variant.lower().replace("+", "_")
        return pathlib.Path(slug) / f"{self.layers}_layers" / f"seed_{self.seed}"


@dataclasses.dataclass(frozen=True)
class GridSettings:
    """What a cell's result depends on besides its variant, depth and seed."""
    dataset: str
    epochs: int
    warmup_epochs: int
    iw_samples: int
    eval_split: str
    max_eval_examples: int = None
    eval_seed: int = 0

    def key(self):
        return dataclasses.asdict(self)


def load_config(dataset, config_file=None):
    """get_config() of configs/<dataset>.py, or of config_file; data.dataset set to dataset."""
    path = pathlib.Path(config_file) if config_file else configs.config_file(dataset)
    spec = importlib.util.spec_from_file_location(f"_reproduce_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.dataset = dataset
    return config


def default_warmup_epochs(config, epochs):
    """The paper's warm-up share of training (200 of 2000 epochs), scaled to `epochs`."""
    share = config.train.warmup_epochs / config.train.epochs
    return max(1, round(share * epochs)) if share > 0 else 0


def cell_config(base, cell, settings):
    """The experiment config of one grid cell (base is left unchanged)."""
    if cell.variant not in VARIANTS:
        raise ValueError(f"unknown variant {cell.variant!r}; expected one of {list(VARIANTS)}")
    inference, batch_norm, warmup = VARIANTS[cell.variant]
    config = base.copy_and_resolve_references()
    experiment_config.apply_shortcuts(config, epochs=settings.epochs, model=inference,
                                      layers=cell.layers)
    config.model.batch_norm = batch_norm
    config.train.warmup_epochs = settings.warmup_epochs if warmup else 0
    config.train.seed = cell.seed
    config.data.eval_split = settings.eval_split
    return experiment_config.validate_config(config)


def hardware_description():
    """CPU model and core count, plus any GPUs TensorFlow sees."""
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu} ({os.cpu_count()} cores)"
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return text + (f", GPU: {', '.join(gpus)}" if gpus else ", no GPU")


def binarization_description(dataset, split):
    spec = data.get_spec(dataset)
    if spec.binarization == "dynamic":
        seed = (data.TEST_BINARIZATION_SEED if split == "test" else
                data.VALIDATION_BINARIZATION_SEED)
        return f"dynamic (train resampled each epoch; {split} binarized once, seed {seed})"
    if spec.binarization == "static":
        return "static (fixed binary files)"
    if spec.binarization == "dequantize":
        return (f"dequantized (x = (k + u) / 256: train redrawn each epoch; {split} drawn once, "
                f"seed {data.DEQUANTIZATION_SEEDS['test' if split == 'test' else 'train']})")
    return "none (continuous pixels)"


class WallClock(keras.callbacks.Callback):
    """Adds each epoch's wall time to TIMING_FILE, so resumed cells report their total."""

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        timing = model_dir_lib.read_json(self.path, default={"train_seconds": 0.0})
        timing["train_seconds"] += time.time() - self.started
        model_dir_lib.write_json_atomically(self.path, timing)


def run_cell(base_config, cell, settings, output_dir, hardware):
    """Train and evaluate one cell unless its result already matches; returns the result."""
    from tf_lvae.training import loop as training
    from tf_lvae.evaluation.trained import evaluate_model_dir
    cell_dir = pathlib.Path(output_dir) / cell.path
    previous = model_dir_lib.read_json(cell_dir / RESULT_FILE)
    if previous and previous.get("settings") == settings.key():
        return dict(previous, skipped=True)
    state = model_dir_lib.read_json(cell_dir / model_dir_lib.STATE_FILE, default={})
    done = state.get("epochs_completed", 0)
    if done > settings.epochs:
        raise ValueError(f"{cell_dir} was trained for {done} epochs, more than --epochs="
                         f"{settings.epochs}; use another --output_dir")
    config = cell_config(base_config, cell, settings)
    cell_dir.mkdir(parents=True, exist_ok=True)
    training.train(config, str(cell_dir), extra_callbacks=[WallClock(cell_dir / TIMING_FILE)])
    started = time.time()
    evaluation = evaluate_model_dir(
        str(cell_dir), iw_samples=settings.iw_samples, split=settings.eval_split,
        max_examples=settings.max_eval_examples, seed=settings.eval_seed, verbose=0)
    eval_seconds = time.time() - started
    model_dir_lib.write_json_atomically(
        cell_dir / f"evaluation_{settings.eval_split}_K{settings.iw_samples}.json", evaluation)
    state = model_dir_lib.read_json(cell_dir / model_dir_lib.STATE_FILE, default={})
    timing = model_dir_lib.read_json(cell_dir / TIMING_FILE, default={"train_seconds": 0.0})
    result = dict(
        variant=cell.variant, layers=cell.layers, seed=cell.seed,
        latent_sizes=list(config.model.latent_sizes), settings=settings.key(),
        dataset=settings.dataset,
        binarization=binarization_description(settings.dataset, settings.eval_split),
        iw_samples=evaluation["iw_samples"], num_examples=evaluation["num_examples"],
        epochs=state.get("epochs_completed"), resumed_from_epoch=done,
        elbo=evaluation["elbo"], iw_bound=evaluation["iw_bound"],
        bn_statistics=evaluation["bn_statistics"], train_elbo=state.get("last_metrics", {}).get("elbo"),
        kl_per_layer=evaluation["kl_per_layer"],
        active_units_per_layer=evaluation["active_units_per_layer"],
        train_seconds=round(timing["train_seconds"], 1), eval_seconds=round(eval_seconds, 1),
        hardware=hardware, model_dir=str(cell_dir))
    model_dir_lib.write_json_atomically(cell_dir / RESULT_FILE, result)
    return dict(result, skipped=False)


def grid_cells(variants, layers, seeds, lvae_one_layer=False):
    """Cells in run order (seed-major, so one full grid finishes before the next seed)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; expected some of {list(VARIANTS)}")
    if not all(1 <= n <= experiment_config.MAX_LAYERS for n in layers):
        raise ValueError(f"layers must be in 1..{experiment_config.MAX_LAYERS}, got {layers}")
    return [Cell(v, n, s) for s in seeds for v in variants for n in layers
            if lvae_one_layer or not (n == 1 and VARIANTS[v][0] == "lvae")]


def aggregate(results):
    """Group cell results over seeds: [{variant, layers, elbo: (mean, std, n), ...}]."""
    groups = {}
    for result in results:
        groups.setdefault((result["variant"], result["layers"]), []).append(result)
    rows = []
    for (variant, layers), cells in groups.items():
        row = dict(variant=variant, layers=layers, latent_sizes=cells[0]["latent_sizes"],
                   seeds=sorted(c["seed"] for c in cells),
                   seconds=sum(c["train_seconds"] + c["eval_seconds"] for c in cells),
                   epochs=sorted({c["epochs"] for c in cells}),
                   hardware=sorted({c["hardware"] for c in cells}))
        for key in ("elbo", "iw_bound", "train_elbo"):
            values = np.array([c[key] for c in cells if c.get(key) is not None], float)
            row[key] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1
                        else 0.0, len(values)) if len(values) else None
        rows.append(row)
    return rows


def _format(stat):
    if stat is None:
        return "—"
    mean, std, n = stat
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f}"


def _duration(seconds):
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def markdown_table(results, settings, variants, notes=()):
    """Table 2 layout (rows: latent sizes, columns: variants) for L_K, L_1 and train L_1.

    notes: the changes from the data set's config (e.g. command-line overrides), listed.
    """
    rows = aggregate(results)
    by_cell = {(r["variant"], r["layers"]): r for r in rows}
    depths = sorted({r["layers"] for r in rows})
    binarization = binarization_description(settings.dataset, settings.eval_split)
    split, k = settings.eval_split, settings.iw_samples
    examples = ", ".join(str(n) for n in sorted({r["num_examples"] for r in results}))
    if settings.max_eval_examples is not None:
        examples = f"the first {examples}"
    lines = [f"# Reproduction of the LVAE paper's grid on {settings.dataset}", "",
             f"{split} split, {examples} examples; K = {k}; "
             f"{settings.epochs} epoch(s) (warm-up {settings.warmup_epochs} epoch(s) for +WU); "
             "mean ± sample std over seeds where n > 1. Higher is better (nats). "
             "An LVAE with one layer is the VAE+BN+WU model (—, as in the paper).", ""]
    if notes:
        lines += [f"Changed from configs/{settings.dataset}.py: " +
                  ", ".join(f"`{note}`" for note in notes) + ".", ""]
    tables = ((f"{split} L_{k} (the paper's Table 2)", "iw_bound"), (f"{split} L_1", "elbo"),
              ("train L_1 (mean over the last epoch, training mode)", "train_elbo"))
    for title, key in tables:
        lines += [f"## {title}", "",
                  "| latent sizes | " + " | ".join(variants) + " | data set | binarization | "
                  "K | epochs | seeds | wall time | hardware |",
                  "|---" * (len(variants) + 8) + "|"]
        for depth in depths:
            cells = [by_cell.get((v, depth)) for v in variants]
            present = [c for c in cells if c]
            sizes = "-".join(map(str, present[0]["latent_sizes"]))
            seeds = sorted({s for c in present for s in c["seeds"]})
            epochs = sorted({e for c in present for e in c["epochs"]})
            hardware = sorted({h for c in present for h in c["hardware"]})
            lines.append(
                f"| {sizes} | " + " | ".join(_format(c[key]) if c else "—" for c in cells) +
                f" | {settings.dataset} | {binarization} | {k} | "
                f"{', '.join(map(str, epochs))} | {', '.join(map(str, seeds))} | "
                f"{_duration(sum(c['seconds'] for c in present))} | {'; '.join(hardware)} |")
        lines.append("")
    lines += ["## Runs", "", "| variant | latent sizes | seed | train L_1 | L_1 | L_K | K | "
              "KL per layer | active units | epochs | data set | binarization | wall time "
              "(train + eval) | hardware | model_dir |", "|---" * 15 + "|"]
    for r in sorted(results, key=lambda r: (variants.index(r["variant"])
                                            if r["variant"] in variants else 99,
                                            r["layers"], r["seed"])):
        train_elbo = "—" if r["train_elbo"] is None else f"{r['train_elbo']:.2f}"
        lines.append(
            f"| {r['variant']} | {'-'.join(map(str, r['latent_sizes']))} | {r['seed']} | "
            f"{train_elbo} | {r['elbo']:.2f} | {r['iw_bound']:.2f} | {r['iw_samples']} | "
            f"{', '.join(f'{v:.2f}' for v in r['kl_per_layer'])} | "
            f"{', '.join(map(str, r['active_units_per_layer']))} | {r['epochs']} | "
            f"{r['dataset']} | {r['binarization']} | {_duration(r['train_seconds'])} + "
            f"{_duration(r['eval_seconds'])} | {r['hardware']} | `{r['model_dir']}` |")
    return "\n".join(lines) + "\n"


def write_outputs(results, settings, variants, output_dir, notes=()):
    from tf_lvae.analysis import figures
    output_dir = pathlib.Path(output_dir)
    table = markdown_table(results, settings, variants, notes)
    model_dir_lib.write_text_atomically(output_dir / "table.md", table)
    model_dir_lib.write_json_atomically(
        output_dir / "results.json", dict(settings=settings.key(), notes=list(notes),
                                          cells=results))
    seeds = sorted({r["seed"] for r in results})
    subtitle = (f"{settings.dataset}, {settings.epochs} epochs, {settings.eval_split} split, "
                f"K = {settings.iw_samples}, seeds {', '.join(map(str, seeds))}" +
                ("; error bars: std over seeds" if len(seeds) > 1 else ""))
    figure = figures.grid_figure(aggregate(results), settings.iw_samples, subtitle)
    figures.save(figure, output_dir / "fig3.png")
    return table, figure


def run_grid(base_config, cells, settings, output_dir, log=print, notes=()):
    """Run (or skip) every cell, rewriting the outputs after each; returns (results, table).

    notes: how base_config differs from the data set's config, stated in the table.
    The grid holds output_dir's lock (tf_lvae.storage.lock): a second grid there is refused.
    """
    output_dir = pathlib.Path(output_dir)
    variants = list(dict.fromkeys(c.variant for c in cells))
    hardware = hardware_description()
    results, table = [], None
    with model_dir_lock.hold(output_dir, purpose="reproduction grid"):
        model_dir_lib.remove_leftovers(output_dir)
        for number, cell in enumerate(cells, 1):
            result = run_cell(base_config, cell, settings, output_dir, hardware)
            action = "skipped (finished earlier)" if result["skipped"] else "done"
            log(f"[{number}/{len(cells)}] {cell.variant} {cell.layers} layers seed "
                f"{cell.seed}: {action}; L_1 = {result['elbo']:.2f}, "
                f"L_{result['iw_samples']} = {result['iw_bound']:.2f}")
            results.append(result)
            table, _ = write_outputs(results, settings, variants, output_dir, notes)
    return results, table
