"""The paper's figures as matplotlib Figures (Agg canvas, no pyplot state, no global backend).

Every function returns a `matplotlib.figure.Figure`; `save(figure, path)` writes a PNG.
Data panels are real axes; colour bars are extra axes labelled '<colorbar>' (see
`panel_axes`). Inputs are the plain records that `tf_lvae.training.diagnostics` writes and
`tf_lvae.evaluation.likelihood.evaluate_images` returns.
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tf_lvae.training.diagnostics import interleave_reconstructions, tile_images
from tf_lvae.model.active_units import ACTIVE_UNIT_THRESHOLD

L1_COLOR, LK_COLOR = "tab:blue", "tab:orange"
LOG_KL_FLOOR = -3.0  # log10 nats: units below 0.001 nats all look "off"


def new_figure(width, height):
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure, path, dpi=120):
    figure.savefig(path, dpi=dpi, facecolor="white")
    return path


def panel_axes(figure):
    """The data panels of a figure (colour bars left out)."""
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]


def _robust_lower_limit(epochs, values):
    """Lower y-limit that ignores the first 10% of epochs (the untrained model's bound)."""
    epochs, values = np.asarray(epochs, float), np.asarray(values, float)
    late = values[epochs >= 0.1 * epochs.max()] if len(epochs) else values
    late = late if len(late) else values
    low, high = np.min(late), np.max(values)
    return low - 0.05 * max(high - low, 1.0)


def likelihood_curves(history, evaluations, eval_split="test", train_split="train"):
    """Fig. 2: train (solid) and eval-split (dashed) L_1 per epoch, and L_K at diagnostics epochs.

    history: diagnostics.read_history records; evaluations: diagnostics.read_evaluations.
    """
    figure = new_figure(7.5, 4.8)
    ax = figure.add_subplot()
    curves = []
    rows = [r for r in history if "elbo" in r]
    if rows:
        curves.append(([r["epoch"] for r in rows], [r["elbo"] for r in rows], L1_COLOR, "-", "",
                       f"{train_split} $L_1$ (epoch mean, training mode)"))
    rows = [r for r in history if "val_elbo" in r]
    if rows:
        curves.append(([r["epoch"] for r in rows], [r["val_elbo"] for r in rows], L1_COLOR,
                       "--", "", f"{eval_split} $L_1$ (whole split)"))
    elif evaluations:
        n = evaluations[-1]["eval"]["num_examples"]
        curves.append(([r["epoch"] for r in evaluations], [r["eval"]["elbo"] for r in evaluations],
                       L1_COLOR, "--", "o", f"{eval_split} $L_1$ ({n} examples)"))
    if evaluations:
        k = evaluations[-1]["iw_samples"]
        for name, split, style in (("train", train_split, "-"), ("eval", eval_split, "--")):
            rows = [r for r in evaluations if name in r]
            if rows:
                n = rows[-1][name]["num_examples"]
                curves.append(([r["epoch"] for r in rows], [r[name]["iw_bound"] for r in rows],
                               LK_COLOR, style, "o",
                               f"{split} $L_{{{k}}}$ ({n} examples)"))
    if not curves:
        raise ValueError("no training history to plot: the model_dir has no diagnostics "
                         "records (train with train.diagnostics_every_epochs > 0)")
    for epochs, values, color, style, marker, label in curves:
        ax.plot(epochs, values, color=color, linestyle=style, marker=marker, markersize=3,
                label=label)
    all_epochs = np.concatenate([c[0] for c in curves])
    all_values = np.concatenate([c[1] for c in curves])
    low, high = _robust_lower_limit(all_epochs, all_values), np.max(all_values)
    ax.set_ylim(low, high + 0.05 * max(high - low, 1.0))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("log-likelihood bound (nats)")
    ax.set_title("Fig. 2: train and test log-likelihood during training")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return figure


def _epoch_edges(epochs):
    epochs = np.asarray(epochs, float)
    if len(epochs) == 1:
        return np.array([epochs[0] - 0.5, epochs[0] + 0.5])
    # Cells meet halfway between evaluations; the axis spans exactly the epochs evaluated.
    middle = (epochs[1:] + epochs[:-1]) / 2
    return np.concatenate([[epochs[0]], middle, [epochs[-1]]])


def kl_per_unit_heatmaps(evaluations, split="eval"):
    """Fig. 4: log10 KL(q|p) of every unit (rows, sorted by final KL) over epochs, per layer.

    One panel per stochastic layer, top layer first as in the paper; white = inactive unit.
    """
    if not evaluations:
        raise ValueError("no per-unit KL records: train with train.diagnostics_every_epochs > 0")
    epochs = [r["epoch"] for r in evaluations]
    per_layer = [np.array([r[split]["kl_per_unit"][i] for r in evaluations])  # [T, D_i]
                 for i in range(len(evaluations[-1][split]["kl_per_unit"]))]
    log_kl = [np.log10(np.maximum(kl, 10 ** LOG_KL_FLOOR)) for kl in per_layer]
    vmax = max(LOG_KL_FLOOR + 1, max(float(np.max(v)) for v in log_kl))
    sizes = [kl.shape[1] for kl in per_layer]
    figure = new_figure(8, 1.2 + 0.9 * len(sizes) + 0.025 * sum(sizes))
    grid = figure.add_gridspec(len(sizes), 1, height_ratios=[max(s, 4) for s in sizes[::-1]])
    edges = _epoch_edges(epochs)
    mesh = None
    for row, layer in enumerate(reversed(range(len(sizes)))):
        ax = figure.add_subplot(grid[row])
        order = np.argsort(-per_layer[layer][-1])  # most active unit on top
        mesh = ax.pcolormesh(edges, np.arange(sizes[layer] + 1), log_kl[layer][:, order].T,
                             cmap="magma_r", vmin=LOG_KL_FLOOR, vmax=vmax)
        ax.invert_yaxis()
        active = int(np.sum(per_layer[layer][-1] > ACTIVE_UNIT_THRESHOLD))
        ax.set_ylabel(f"$z_{layer + 1}$ units", fontsize=9)
        ax.set_title(f"layer {layer + 1}: {active}/{sizes[layer]} units active at epoch "
                     f"{epochs[-1]}", fontsize=9, loc="left")
        ax.set_yticks([])
        if row < len(sizes) - 1:
            ax.tick_params(labelbottom=False)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    bar = figure.colorbar(mesh, ax=panel_axes(figure), shrink=0.9)
    bar.set_label("log$_{10}$ KL(q|p) per unit (nats)")
    bar.ax.axhline(np.log10(ACTIVE_UNIT_THRESHOLD), color="tab:cyan", linewidth=2)
    figure.suptitle("Fig. 4: KL per latent unit over training (units sorted by final KL; "
                    f"pale = inactive; cyan mark = {ACTIVE_UNIT_THRESHOLD} nats)", fontsize=10)
    return figure


def kl_per_layer(final, evaluations=(), split="eval"):
    """Fig. 5: KL per layer (nats) of the final model (bars), and over training (lines).

    final: an evaluate_images result (kl_per_layer, active_units_per_layer, kl_per_unit).
    """
    kls, active = final["kl_per_layer"], final["active_units_per_layer"]
    sizes = [len(units) for units in final["kl_per_unit"]]
    figure = new_figure(11 if evaluations else 6, 4.2)
    ax = figure.add_subplot(1, 2 if evaluations else 1, 1)
    layers = np.arange(1, len(kls) + 1)
    bars = ax.bar(layers, kls, color=[f"C{i}" for i in range(len(kls))])
    for bar, a, d in zip(bars, active, sizes):
        ax.annotate(f"{a}/{d} active", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(layers, [f"$z_{i}$" for i in layers])
    ax.set_xlabel("stochastic layer")
    ax.set_ylabel("KL(q|p) (nats, mean per example)")
    ax.set_title(f"KL per layer, final model (total {sum(kls):.2f} nats)", fontsize=10)
    ax.margins(y=0.15)
    if evaluations:
        ax = figure.add_subplot(1, 2, 2)
        epochs = [r["epoch"] for r in evaluations]
        for i in range(len(kls)):
            ax.plot(epochs, [r[split]["kl_per_layer"][i] for r in evaluations], marker="o",
                    markersize=3, color=f"C{i}", label=f"$z_{i + 1}$")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("KL(q|p) (nats)")
        ax.set_title("KL per layer during training", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("Fig. 5: how much of the representation each layer carries")
    return figure


def pca_2d(points):
    """Project [N, D] onto its 2 principal components: ([N, 2], explained variance ratios [2])."""
    centered = points - points.mean(axis=0)
    _, singular, right = np.linalg.svd(centered, full_matrices=False)
    variance = singular ** 2
    ratio = variance / max(variance.sum(), 1e-12)
    projected = centered @ right[:2].T
    if projected.shape[1] == 1:  # a 1-unit layer: spread along x only
        projected = np.concatenate([projected, np.zeros_like(projected)], axis=1)
        ratio = np.concatenate([ratio, [0.0]])
    return projected, ratio[:2]


def latent_pca(latents, labels=None, note=None, class_names=None):
    """Fig. 6: PCA of z_i ~ q(z_i|.) per layer, coloured by class label when given.

    latents: [[N, D_i]] bottom layer first; labels: int [N] or None.
    """
    count = len(latents)
    columns = min(count, 5)
    rows = -(-count // columns)
    figure = new_figure(3.3 * columns + (1.2 if labels is not None else 0), 3.4 * rows + 0.5)
    scatter = None
    for i, z in enumerate(latents):
        ax = figure.add_subplot(rows, columns, i + 1)
        projected, ratio = pca_2d(np.asarray(z, np.float64))
        kwargs = dict(s=5, alpha=0.7, linewidths=0)
        if labels is None:
            ax.scatter(projected[:, 0], projected[:, 1], color="0.3", **kwargs)
        else:  # tab10: one colour per class up to 10 classes; more get a continuous map
            num_classes = int(np.max(labels)) + 1
            scatter = ax.scatter(projected[:, 0], projected[:, 1], c=labels,
                                 cmap="tab10" if num_classes <= 10 else "turbo", vmin=-0.5,
                                 vmax=max(num_classes, 10) - 0.5, **kwargs)
        ax.set_title(f"$z_{i + 1}$ ({z.shape[1]} units)", fontsize=10)
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% var.)", fontsize=8)
        ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}% var.)", fontsize=8)
        ax.tick_params(labelsize=7)
    if scatter is not None:
        num_classes = int(np.max(labels)) + 1
        bar = figure.colorbar(scatter, ax=panel_axes(figure), shrink=0.8,
                              ticks=range(min(num_classes, 10)) if num_classes <= 10 else None)
        if class_names is not None and num_classes <= 10:
            bar.ax.set_yticklabels(class_names[:num_classes])
        bar.set_label("class label")
    title = "Fig. 6: PCA of samples $z_i \\sim q(z_i|\\cdot)$ per layer"
    figure.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    return figure


def samples_figure(data, reconstructed, reconstructions, samples, columns=8):
    """Figs. 9-10: a) data, b) reconstructions (posterior mean), c) samples from the prior.

    Each argument is [N, h, w, c] in [0, 1]; b) interleaves rows of `reconstructed` examples
    and their `reconstructions`.
    """
    pairs = interleave_reconstructions(reconstructed, reconstructions, columns)
    panels = [("a) data", tile_images(data, columns)),
              ("b) reconstructions (odd rows: data, even rows: reconstruction)",
               tile_images(pairs, columns)),
              ("c) samples from the prior", tile_images(samples, columns))]
    figure = new_figure(13, 5.2)
    for i, (title, grid) in enumerate(panels):
        ax = figure.add_subplot(1, 3, i + 1)
        image = grid[..., 0] if grid.shape[-1] == 1 else grid
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    figure.suptitle("Figs. 9-10: data, reconstructions and samples")
    return figure


def grid_figure(rows, k, subtitle=None):
    """Fig. 3: train L_1, test L_1 and test L_K against the number of stochastic layers.

    rows: [{variant, layers, train_elbo, elbo, iw_bound}], the bounds (mean, std, n) or None;
    one row per (variant, layers). Error bars: std over seeds.
    """
    figure = new_figure(14, 4.3)
    metrics = (("train_elbo", "a) train $L_1$ (last epoch, training mode)"),
               ("elbo", "b) test $L_1$"),
               ("iw_bound", f"c) test $L_{{{k}}}$"))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    depths = sorted({r["layers"] for r in rows})
    for i, (key, title) in enumerate(metrics):
        ax = figure.add_subplot(1, 3, i + 1)
        for j, variant in enumerate(variants):
            cells = sorted((r for r in rows if r["variant"] == variant and r.get(key)),
                           key=lambda r: r["layers"])
            if not cells:
                continue
            ax.errorbar([r["layers"] for r in cells], [r[key][0] for r in cells],
                        yerr=[r[key][1] for r in cells], marker="o", capsize=3,
                        color=f"C{j}", label=variant)
        ax.set_xlabel("number of stochastic layers")
        ax.set_ylabel("nats")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(depths)
        ax.set_xlim(depths[0] - 0.5, depths[-1] + 0.5)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    figure.suptitle("Fig. 3: log-likelihood against depth, batch normalisation (BN) and "
                    "warm-up (WU)" + (f"\n{subtitle}" if subtitle else ""))
    return figure


def _grid_panels(grids, row_labels, titles, suptitle, panel_width=4.6):
    """A figure of tiled image grids side by side, one y label per row of images on the first.

    grids: [tile_images results] of equal shape, each `len(row_labels)` rows of images.
    """
    height, width = grids[0].shape[:2]
    rows = len(row_labels)
    # at least 3.2 in tall: a shallow model's grid would leave no room for the two-line title
    figure = new_figure(panel_width * len(grids) + 0.8,
                        max(3.2, panel_width * height / width + 1.1))
    image_height = (height - 1) / rows  # tile_images pads 1 pixel around every image
    for n, (grid, title) in enumerate(zip(grids, titles)):
        ax = figure.add_subplot(1, len(grids), n + 1)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0,
                  vmax=1.0, interpolation="nearest")
        ax.set_yticks([(r + 0.5) * image_height for r in range(rows)],
                      row_labels if n == 0 else [""] * rows, fontsize=8)
        ax.set_xticks([])
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(title, fontsize=9)
    figure.suptitle(suptitle, fontsize=10)
    return figure


def keep_top_figure(originals, redraws):
    """Layer-wise generation, "keep the top, redraw below": one panel per image.

    originals [N, h, w, c]; redraws [N, L, R, h, w, c] (`generation.keep_top_grid`). In a panel
    row k shows the image, then R redraws with layers k..L of its posterior kept and the layers
    below k drawn from the prior: what stays the same along a row is what layers k..L hold.
    """
    originals, redraws = np.asarray(originals), np.asarray(redraws)
    count, num_layers, num_redraws = redraws.shape[:3]
    grids = [tile_images(np.concatenate([np.concatenate([originals[n][None], redraws[n, k]])
                                         for k in range(num_layers)]), num_redraws + 1)
             for n in range(count)]
    labels = [f"keep $z_{{{k}}}$..$z_{{{num_layers}}}$" if k < num_layers else
              f"keep $z_{{{k}}}$" for k in range(1, num_layers + 1)]
    titles = [f"image {n + 1}: data, then {num_redraws} redraws" for n in range(count)]
    return _grid_panels(grids, labels, titles,
                        "Keep the top, redraw below: row k keeps the posterior means of layers "
                        "k..L and draws the layers below from the prior\n(row 1 redraws "
                        "nothing: the reconstruction; column r uses the same noise in every "
                        "row)")


def interpolation_figure(images_a, images_b, paths):
    """Interpolation in one layer's posterior at a time: one panel per pair of images.

    images_a, images_b [N, h, w, c]; paths [N, L, S, h, w, c] (`generation.interpolation_grid`).
    Row k: a, then layer k's posterior mean moved from a's to b's in S steps (layers above k at
    a's means, layers below at the prior means), then b.
    """
    images_a, images_b, paths = map(np.asarray, (images_a, images_b, paths))
    count, num_layers, num_steps = paths.shape[:3]
    grids = [tile_images(np.concatenate([np.concatenate([images_a[n][None], paths[n, k],
                                                         images_b[n][None]])
                                         for k in range(num_layers)]), num_steps + 2)
             for n in range(count)]
    labels = [f"layer {k}" for k in range(1, num_layers + 1)]
    titles = [f"pair {n + 1}: a, {num_steps} steps (weight 0 to 1), b" for n in range(count)]
    return _grid_panels(grids, labels, titles,
                        "Interpolation in the posterior of one layer: row k moves layer k's "
                        "mean from a's to b's\n(layers above k: a's means; layers below k: "
                        "the prior means given the layer above)")
