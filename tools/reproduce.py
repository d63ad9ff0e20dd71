"""Reproduce the LVAE paper's grid (Fig. 3, Table 2): four model variants x 1..5 layers.

    python tools/reproduce.py --dataset=mnist --data_dir=/path/to/mnist --epochs=2000
    python tools/reproduce.py --dataset=binarized_mnist --epochs=50 \
        --variants=VAE+BN+WU,LVAE+BN+WU --layers=2,5 --seeds=0,1,2 --iw_samples=1000

Each cell (variant, layers, seed) trains with tf_lvae.training.loop.train into
OUTPUT_DIR/<variant>/<L>_layers/seed_<s>/ and is evaluated with
tf_lvae.evaluation.trained.evaluate_model_dir (test L_1 and L_K). After every cell OUTPUT_DIR gets
table.md (Table 2 layout, with data set, binarization, K, epochs, seeds, wall time and
hardware on every row), results.json and fig3.png. Rerunning skips finished cells and
resumes interrupted ones. Variants: VAE (no batch norm, no warm-up), VAE+BN, VAE+BN+WU,
LVAE+BN+WU.
"""
import argparse
import ast
import sys

# argparse, not absl flags: tf_lvae.evaluate defines absl flags (--model_dir, --iw_samples, ...)
# when imported, which would clash with this program's own.
VARIANTS = ("VAE", "VAE+BN", "VAE+BN+WU", "LVAE+BN+WU")


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="mnist, binarized_mnist, omniglot, "
                        "norb or fashion_mnist (configs/<dataset>.py gives the paper's settings)")
    parser.add_argument("--epochs", type=int, required=True, help="training epochs of every cell")
    parser.add_argument("--output_dir", help="where the cells and the table go (default: "
                        "runs/reproduce_<dataset>)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated model variants, the table's columns")
    parser.add_argument("--layers", type=_ints, default=[1, 2, 3, 4, 5],
                        help="numbers of stochastic layers, the rows (N keeps the bottom N "
                        "latent sizes); default 1,2,3,4,5")
    parser.add_argument("--seeds", type=_ints, default=[0],
                        help="training seeds; several are averaged (mean ± std); default 0")
    parser.add_argument("--iw_samples", type=int, help="K of the test L_K (default: the "
                        "config's eval.iw_samples, 5000 as in the paper)")
    parser.add_argument("--max_eval_examples", type=int,
                        help="evaluate only the first N examples of the split")
    parser.add_argument("--eval_split", help="split evaluated (default: the config's, test)")
    parser.add_argument("--warmup_epochs", type=int, help="warm-up epochs of the +WU variants "
                        "(default: the paper's 10%% of --epochs)")
    parser.add_argument("--data_dir", help="folder with the data set's files")
    parser.add_argument("--config", help="another config file with get_config() (default: "
                        "configs/<dataset>.py)")
    parser.add_argument("--latent_sizes", type=_ints, help="latent sizes, bottom first "
                        "(default: the config's 64,32,16,8,4)")
    parser.add_argument("--hidden_sizes", type=_ints, help="MLP widths, bottom first "
                        "(default: the config's 512,256,128,64,32)")
    parser.add_argument("--override", action="append", default=[], metavar="SECTION.FIELD=V",
                        help="any config field, e.g. --override=train.batch_size=128 "
                        "(repeatable)")
    parser.add_argument("--lvae_one_layer", action="store_true", help="also train the 1-layer "
                        "LVAE (the same model as the 1-layer VAE+BN+WU)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.iw_samples is not None and args.iw_samples < 1:
        parser.error(f"--iw_samples must be >= 1, got {args.iw_samples}")
    return args


def _apply_override(config, text):
    """'section.field=value' -> config.section.field = value (Python literal or string)."""
    name, sep, raw = text.partition("=")
    section, dot, field = name.partition(".")
    if not sep or not dot or section not in config or field not in config[section]:
        raise ValueError(f"--override={text!r}: expected SECTION.FIELD=VALUE with an existing "
                         f"field, e.g. train.batch_size=128")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    config[section][field] = value


def main(argv=None):
    args = parse_args(argv)
    from tf_lvae import cli
    from tf_lvae.analysis import reproduction
    with cli.clear_errors():
        config = reproduction.load_config(args.dataset, args.config)
        notes = [f"--config={args.config}"] if args.config else []
        if args.data_dir:
            config.data.data_dir = args.data_dir
        if args.latent_sizes:
            config.model.latent_sizes = tuple(args.latent_sizes)
            notes.append(f"--latent_sizes={','.join(map(str, args.latent_sizes))}")
        if args.hidden_sizes:
            config.model.hidden_sizes = tuple(args.hidden_sizes)
            notes.append(f"--hidden_sizes={','.join(map(str, args.hidden_sizes))}")
        for text in args.override:
            _apply_override(config, text)
            notes.append(f"--override={text}")
        settings = reproduction.GridSettings(
            dataset=args.dataset, epochs=args.epochs,
            warmup_epochs=(args.warmup_epochs if args.warmup_epochs is not None else
                           reproduction.default_warmup_epochs(config, args.epochs)),
            iw_samples=args.iw_samples or config.eval.iw_samples,
            eval_split=args.eval_split or config.data.eval_split,
            max_eval_examples=args.max_eval_examples)
        cells = reproduction.grid_cells([v.strip() for v in args.variants.split(",")],
                                        args.layers, args.seeds, args.lvae_one_layer)
        output_dir = args.output_dir or f"runs/reproduce_{args.dataset}"
        _, table = reproduction.run_grid(config, cells, settings, output_dir,
                                         log=lambda line: print(line, flush=True),
                                         notes=notes)
        print(table)
        print(f"table: {output_dir}/table.md, figure: {output_dir}/fig3.png", file=sys.stderr)


if __name__ == "__main__":
    main()
