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
from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS


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
        from tf_lvae.analysis import report  # imported late: --help and flag errors stay fast
        output = report.analyze_model_dir(
            FLAGS.model_dir, FLAGS.output_dir, FLAGS.iw_samples, FLAGS.split, FLAGS.data_dir,
            FLAGS.max_examples, FLAGS.pca_examples, FLAGS.pca_dataset, FLAGS.pca_data_dir,
            FLAGS.seed)
        print(output["summary"])
        for name, path in output["files"].items():
            print(f"{name}: {path}")


if __name__ == "__main__":
    cli.run(main, define_flags)
