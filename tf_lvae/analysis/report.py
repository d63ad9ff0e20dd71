"""The analyze report of one trained model: the paper's figures as PNGs and a summary
(what `python -m tf_lvae.analyze` runs; tf_lvae/analyze.py lists the files)."""
import glob
import json
import os
import pathlib

from tf_lvae import data
from tf_lvae import experiment_config
from tf_lvae.analysis import figures
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.model import generation
from tf_lvae.storage import checkpoints
from tf_lvae.storage import model_dir as model_dir_lib
from tf_lvae.training import diagnostics

FIGURE_FILES = {"fig2": "fig2_likelihood.png", "fig4": "fig4_kl_per_unit.png",
                "fig5": "fig5_kl_per_layer.png", "fig6": "fig6_latent_pca.png",
                "fig9": "fig9_samples.png", "layers_keep_top": "layers_keep_top.png",
                "layers_interpolation": "layers_interpolation.png"}
LAYERWISE_IMAGES, LAYERWISE_COLUMNS = 3, 8   # images (pairs: 2) and redraws / steps per row


def _load_split(dataset, split, data_dir, validation_size=None):
    return data.load_arrays(dataset, split, data_dir=data_dir, num_validation=validation_size)


def _pca_inputs(data_settings, split, data_dir, pca_dataset, pca_data_dir, count, seed):
    """(images, labels or None, note) for Fig. 6: a fixed random subset of `count` examples."""
    dataset = data_settings.dataset
    if pca_dataset and pca_dataset != dataset:
        if data.get_spec(pca_dataset).image_shape != data.get_spec(dataset).image_shape:
            raise ValueError(f"--pca_dataset={pca_dataset} has images of shape "
                             f"{data.get_spec(pca_dataset).image_shape}; the model takes "
                             f"{data.get_spec(dataset).image_shape} ({dataset})")
        images, labels = _load_split(pca_dataset, split, pca_data_dir)
        note = f"encoded examples: {pca_dataset} {split} (the model was trained on {dataset})"
    else:
        images, labels = _load_split(dataset, split, data_dir, data_settings.validation_size)
        note = None
        if labels is None:
            note = (f"{dataset} has no class labels, so points are uncoloured "
                    "(--pca_dataset=mnist --pca_data_dir=DIR colours them by digit)")
    index = diagnostics.subset_indices(len(images), count, seed)
    return images[index], None if labels is None else labels[index], note


def _posterior_samples(model, images, seed):
    """One z_i ~ q(z_i|.) per example and layer: [[N, D_i]] bottom layer first."""
    import numpy as np
    import tensorflow as tf
    draws_per_batch = []
    for start in range(0, len(images), 500):
        x = model.flatten_images(tf.constant(images[start:start + 500]))
        batch_seed = (seed * 7919 + start // 500) % 2**31
        draws = model.posterior_draws(model.bottom_up(x), 1, seed=batch_seed)
        draws_per_batch.append([d.z.numpy() for d in draws])
    return [np.concatenate(layer) for layer in zip(*draws_per_batch)]


def _layerwise_figures(model, images, seed):
    """{name: Figure} of layer-wise generation from images spread over `images` (a sorted
    random subset of a split, which may be ordered by class)."""
    import numpy as np
    picked = images[np.linspace(0, len(images) - 1, LAYERWISE_IMAGES + 4).round().astype(int)]
    kept = picked[:LAYERWISE_IMAGES]
    a, b = picked[LAYERWISE_IMAGES::2], picked[LAYERWISE_IMAGES + 1::2]
    redraws = generation.keep_top_grid(model, kept, LAYERWISE_COLUMNS, seed).numpy()
    paths = generation.interpolation_grid(model, a, b, LAYERWISE_COLUMNS).numpy()
    return dict(layers_keep_top=figures.keep_top_figure(kept, redraws),
                layers_interpolation=figures.interpolation_figure(a, b, paths))


def _existing_evaluations(model_dir, split, epochs):
    """Results tf_lvae.evaluate wrote for this split and checkpoint (e.g. the paper's L_5000)."""
    found = []
    for path in sorted(glob.glob(os.path.join(model_dir, f"evaluation_{split}_K*.json"))):
        result = json.loads(pathlib.Path(path).read_text())
        if result.get("epochs_trained") == epochs:
            found.append(result)
    return found


def summary_markdown(info, result, extra_results, skipped):
    lines = [f"# Analysis of `{info['model_dir']}`", "",
             f"{info['inference'].upper()} with latent sizes "
             f"{'-'.join(map(str, info['latent_sizes']))}, trained {info['epochs']} epochs on "
             f"{info['dataset']}; evaluated on {result['num_examples']} {info['split']} "
             f"examples{info['subset_note']}, with "
             f"{result.get('bn_statistics', 'moving')} batch-norm statistics.", "",
             "| bound | value (nats) |", "|---|---|",
             f"| L_1 (ELBO) | {result['elbo']:.2f} |",
             f"| L_{result['iw_samples']} | {result['iw_bound']:.2f} |"]
    for other in extra_results:
        lines.append(f"| L_{other['iw_samples']} (tf_lvae.evaluate, {other['num_examples']} "
                     f"examples) | {other['iw_bound']:.2f} |")
    lines += ["", "| layer | units | active units (KL > 0.01 nats) | KL (nats) |",
              "|---|---|---|---|"]
    for i, (units, active, kl) in enumerate(zip(result["kl_per_unit"],
                                                result["active_units_per_layer"],
                                                result["kl_per_layer"])):
        lines.append(f"| z_{i + 1} | {len(units)} | {active} | {kl:.3f} |")
    lines.append(f"| total | {sum(len(u) for u in result['kl_per_unit'])} | "
                 f"{sum(result['active_units_per_layer'])} | {result['kl']:.3f} |")
    lines += ["", "Figures: " + ", ".join(f"`{name}`" for name in info["files"])]
    for name, reason in skipped.items():
        lines.append(f"- {name} skipped: {reason}")
    return "\n".join(lines) + "\n"


def analyze_model_dir(model_dir, output_dir=None, iw_samples=100, split=None, data_dir=None,
                      max_examples=None, pca_examples=2000, pca_dataset=None,
                      pca_data_dir=None, seed=0, num_images=64):
    """Write the figures and summary of model_dir; returns dict(figures, files, summary, ...).

    figures: {fig name: matplotlib Figure}; files: {fig name or 'summary': path}.
    """
    model, config, epochs = checkpoints.load_model(model_dir)
    experiment = experiment_config.resolve(config)
    bn_statistics = batch_norm_statistics.for_evaluation(model, experiment)
    data_settings = experiment.data
    dataset = data_settings.dataset
    split = split or data_settings.eval_split
    data_dir = data_dir or data_settings.data_dir
    output_dir = pathlib.Path(output_dir or pathlib.Path(model_dir) / "analysis")
    output_dir.mkdir(parents=True, exist_ok=True)

    images = _load_split(dataset, split, data_dir, data_settings.validation_size)[0]
    split_size = len(images)
    if max_examples is not None:  # a random subset: some splits are sorted by class
        images = images[diagnostics.subset_indices(len(images), max_examples, seed)]
    result = evaluation.evaluate_images(model, images, iw_samples=iw_samples, seed=seed,
                                        iw_batch_size=max(1, min(500, 10_000 // iw_samples)),
                                        verbose=0)
    result["bn_statistics"] = bn_statistics
    history = diagnostics.read_history(model_dir)
    evaluations = diagnostics.read_evaluations(model_dir)
    split_names = evaluations[-1].get("splits", {}) if evaluations else {}

    built, skipped = {}, {}
    if history or evaluations:
        built["fig2"] = figures.likelihood_curves(
            history, evaluations, eval_split=split_names.get("eval", "test"),
            train_split=split_names.get("train", "train"))
        built["fig4"] = figures.kl_per_unit_heatmaps(evaluations) if evaluations else None
    reason = "no diagnostics records in MODEL_DIR/diagnostics (train with " \
             "train.diagnostics_every_epochs > 0)"
    for name in ("fig2", "fig4"):
        if built.get(name) is None:
            built.pop(name, None)
            skipped[name] = reason
    built["fig5"] = figures.kl_per_layer(result, evaluations)
    pca_images, labels, note = _pca_inputs(data_settings, split, data_dir, pca_dataset,
                                           pca_data_dir, pca_examples, seed)
    built["fig6"] = figures.latent_pca(_posterior_samples(model, pca_images, seed), labels, note)
    pca = dict(dataset=pca_dataset or dataset, examples=len(pca_images),
               coloured_by_label=labels is not None)
    shown = images[diagnostics.subset_indices(len(images), num_images, seed + 1)]
    pairs = shown[:num_images // 2]
    built["fig9"] = figures.samples_figure(shown, pairs, model(pairs, training=False).numpy(),
                                           model.sample(num_images, seed=seed).numpy())
    built.update(_layerwise_figures(model, shown, seed))

    files = {name: str(figures.save(figure, output_dir / FIGURE_FILES[name]))
             for name, figure in built.items()}
    subsetted = max_examples is not None and max_examples < split_size
    info = dict(model_dir=str(model_dir), inference=model.spec.inference,
                latent_sizes=list(model.spec.latent_sizes), epochs=epochs, dataset=dataset,
                split=split, subset_note=f" (a random subset, seed {seed})" if subsetted else "",
                files=[pathlib.Path(p).name for p in files.values()], pca=pca)
    extra = [r for r in _existing_evaluations(model_dir, split, epochs)
             if r.get("iw_samples") != result["iw_samples"]]
    summary = summary_markdown(info, result, extra, skipped)
    files["summary"] = str(output_dir / "summary.md")
    pathlib.Path(files["summary"]).write_text(summary)
    model_dir_lib.write_json_atomically(output_dir / "summary.json",
                                        dict(info, evaluation=result, skipped=skipped))
    return dict(figures=built, files=files, summary=summary, evaluation=result,
                skipped=skipped)
