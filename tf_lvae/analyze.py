"""The paper's analyses of one trained model: Figs. 2, 4, 5, 6, 9-10 as PNGs and a summary.

    python -m tf_lvae.analyze --model_dir=runs/mnist_lvae [--output_dir=DIR] [--iw_samples=100]
    python -m tf_lvae.analyze --model_dir=runs/bmnist --pca_dataset=mnist \
        --pca_data_dir=/path/to/mnist_idx_files   # colour Fig. 6 by digit

Writes to --output_dir (default MODEL_DIR/analysis):
    fig2_likelihood.png   train / test L_1 per epoch and small-K L_K (needs diagnostics records)
    fig4_kl_per_unit.png  log KL per unit per layer over the diagnostics epochs
    fig5_kl_per_layer.png KL per layer of the final model, and over training
    fig6_latent_pca.png   PCA of z_i ~ q per layer, coloured by class where labels exist
    fig9_samples.png      data, reconstructions, samples from the prior
    layers_keep_top.png   per image, row k: layers k..L of its posterior kept, the layers below
                          redrawn from the prior (how much of a digit each layer holds)
    layers_interpolation.png  per pair, row k: layer k's posterior mean moved from a's to b's
    summary.md / summary.json   L_1, L_K, KL and active units per layer
Figs. 2 and 4 read MODEL_DIR/diagnostics/ (written during training when
train.diagnostics_every_epochs > 0); without it they are skipped and the summary says so.
"""
import glob
import json
import os
import pathlib

from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS
FIGURE_FILES = {"fig2": "fig2_likelihood.png", "fig4": "fig4_kl_per_unit.png",
                "fig5": "fig5_kl_per_layer.png", "fig6": "fig6_latent_pca.png",
                "fig9": "fig9_samples.png", "layers_keep_top": "layers_keep_top.png",
                "layers_interpolation": "layers_interpolation.png"}
LAYERWISE_IMAGES, LAYERWISE_COLUMNS = 3, 8   # images (pairs: 2) and redraws / steps per row


def _load_split(dataset, split, data_dir, config_data):
    from tf_lvae import data, experiment_config
    return data.load_arrays(dataset, split, data_dir=data_dir,
                            num_validation=experiment_config.num_validation(config_data))


def _pca_inputs(config_data, split, data_dir, pca_dataset, pca_data_dir, count, seed):
    """(images, labels or None, note) for Fig. 6: a fixed random subset of `count` examples."""
    from tf_lvae import data, diagnostics
    dataset = config_data.get("dataset", "binarized_mnist")
    if pca_dataset and pca_dataset != dataset:
        if data.get_spec(pca_dataset).image_shape != data.get_spec(dataset).image_shape:
            raise ValueError(f"--pca_dataset={pca_dataset} has images of shape "
                             f"{data.get_spec(pca_dataset).image_shape}; the model takes "
                             f"{data.get_spec(dataset).image_shape} ({dataset})")
        images, labels = _load_split(pca_dataset, split, pca_data_dir, {})
        note = f"encoded examples: {pca_dataset} {split} (the model was trained on {dataset})"
    else:
        images, labels = _load_split(dataset, split, data_dir, config_data)
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
    from tf_lvae import figures, generation
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
    from tf_lvae import diagnostics, evaluation, figures
    from tf_lvae import model_dir as model_dir_lib
    from tf_lvae import batch_norm_statistics
    model, config, epochs = model_dir_lib.load_model(model_dir)
    bn_statistics = batch_norm_statistics.for_evaluation(model, config)
    config_data = config.get("data", {})
    dataset = config_data.get("dataset", "binarized_mnist")
    split = split or config_data.get("eval_split", "test")
    data_dir = data_dir or config_data.get("data_dir")
    output_dir = pathlib.Path(output_dir or pathlib.Path(model_dir) / "analysis")
    output_dir.mkdir(parents=True, exist_ok=True)

    images = _load_split(dataset, split, data_dir, config_data)[0]
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
    pca_images, labels, note = _pca_inputs(config_data, split, data_dir, pca_dataset,
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


def define_flags():
    """Defined when run as a program only, so importing this module defines no global flags."""
    flags.DEFINE_string("model_dir", None, "A model_dir written by tf_lvae.train.",
                        required=True)
    flags.DEFINE_string("output_dir", None, "Where the PNGs and summary go (default: "
                        "MODEL_DIR/analysis).")
    flags.DEFINE_integer("iw_samples", 100, "K of the L_K in the summary (tf_lvae.evaluate "
                         "gives the paper's L_5000).")
    flags.DEFINE_string("split", None, "Split evaluated and plotted (default: the config's "
                        "data.eval_split).")
    flags.DEFINE_string("data_dir", None, "Folder with the data set's files (default: as "
                        "trained).")
    flags.DEFINE_integer("max_examples", None, "Evaluate a fixed random subset of N examples "
                         "of the split (default: all).")
    flags.DEFINE_integer("pca_examples", 2000, "Examples in the PCA plot (Fig. 6).")
    flags.DEFINE_string("pca_dataset", None, "Data set whose labelled examples Fig. 6 "
                        "encodes (default: the model's; e.g. mnist for a binarized_mnist "
                        "model, which has no labels).")
    flags.DEFINE_string("pca_data_dir", None, "Folder with --pca_dataset's files.")
    flags.DEFINE_integer("seed", 0, "Seed of posterior and prior samples.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with cli.clear_errors():
        if FLAGS.iw_samples < 1 or FLAGS.pca_examples < 1:
            raise ValueError(f"--iw_samples and --pca_examples must be >= 1, got "
                             f"{FLAGS.iw_samples} and {FLAGS.pca_examples}")
        output = analyze_model_dir(
            FLAGS.model_dir, FLAGS.output_dir, FLAGS.iw_samples, FLAGS.split, FLAGS.data_dir,
            FLAGS.max_examples, FLAGS.pca_examples, FLAGS.pca_dataset, FLAGS.pca_data_dir,
            FLAGS.seed)
        print(output["summary"])
        for name, path in output["files"].items():
            print(f"{name}: {path}")


if __name__ == "__main__":
    cli.run(main, define_flags)
