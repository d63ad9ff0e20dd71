"""Evaluate a trained model: L_1 and the importance-weighted bound L_K on a whole split.

    python -m tf_lvae.evaluate --model_dir=runs/quick [--iw_samples=5000] [--split=test]
    python -m tf_lvae.evaluate --pretrained=mnist_lvae5 --data_dir=DIR   # a shipped model

Prints its progress (a bar on a terminal, a line every 30 s in a log), then the result as one
JSON object on the last line, and writes the same object to
MODEL_DIR/evaluation_<split>_K<iw_samples>.json (or --output=FILE).
"""
import json
import os
import sys

from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS


def define_flags():
    """Flags of this CLI; defined only when run as a program, so importing is side-effect free."""
    flags.DEFINE_string("model_dir", None, "A model_dir written by tf_lvae.train.")
    flags.DEFINE_string("pretrained", None, "Instead of --model_dir: a model shipped with the "
                        "package (tf_lvae.storage.model_zoo.available()); --output defaults to "
                        "./evaluation_<name>_<split>_K<K>.json.")
    flags.DEFINE_integer("iw_samples", None,
                         "K of L_K (default: the model's config, eval.iw_samples).")
    flags.DEFINE_string("split", None, "train | validation | test | train+validation "
                        "(default: the config's data.eval_split).")
    flags.DEFINE_string("data_dir", None,
                        "Folder with the data set's files (default: as trained).")
    flags.DEFINE_integer("chunk_size", None, "Importance samples per chunk (memory ~ batch*chunk).")
    flags.DEFINE_integer("iw_batch_size", None, "Examples per L_K batch.")
    flags.DEFINE_integer("max_examples", None, "Evaluate only the first N examples of the split.")
    flags.DEFINE_integer("seed", 0, "Seed of the posterior samples.")
    flags.DEFINE_string("output", None, "Where to write the JSON (default: inside model_dir).")
    flags.DEFINE_enum("bn_statistics", None, ["population", "moving"],
                      "BatchNorm statistics: population (one pass over the training split "
                      "under the final weights, as the authors' code) or moving (Keras' moving "
                      "averages); default: the config's eval.bn_statistics (population).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with cli.clear_errors(after="the result is printed above", elsewhere="pass --output=FILE"):
        if FLAGS.iw_samples is not None and FLAGS.iw_samples < 1:
            raise ValueError(f"--iw_samples must be >= 1, got {FLAGS.iw_samples}")
        if (FLAGS.model_dir is None) == (FLAGS.pretrained is None):
            raise ValueError("pass exactly one of --model_dir (a trained model_dir) and "
                             "--pretrained (a shipped model)")
        args = (FLAGS.iw_samples, FLAGS.split, FLAGS.data_dir, FLAGS.chunk_size,
                FLAGS.iw_batch_size, FLAGS.max_examples, FLAGS.seed)
        verbose = 1 if sys.stdout.isatty() else 2
        from tf_lvae.evaluation import trained  # imported late: --help and flag errors stay fast
        if FLAGS.pretrained:
            if FLAGS.bn_statistics not in (None, "population"):
                raise ValueError("a pretrained model ships its population statistics only; "
                                 f"--bn_statistics={FLAGS.bn_statistics} is not available")
            result = trained.evaluate_pretrained(FLAGS.pretrained, *args, verbose=verbose)
        else:
            result = trained.evaluate_model_dir(FLAGS.model_dir, *args, verbose=verbose,
                                        bn_statistics=FLAGS.bn_statistics)
        from tf_lvae.storage import model_dir as model_dir_lib
        name = (f"evaluation_{FLAGS.pretrained}_" if FLAGS.pretrained else "evaluation_")
        output = FLAGS.output or os.path.join(
            FLAGS.model_dir or ".", f"{name}{result['split']}_K{result['iw_samples']}.json")
        summary = {k: v for k, v in result.items() if k != "kl_per_unit"}
        try:
            model_dir_lib.write_json_atomically(output, result)
        except model_dir_lib.StorageError:  # e.g. a read-only model_dir: keep the result
            print(json.dumps(summary))
            raise
        print(f"L_1 = {result['elbo']:.2f} nats, L_{result['iw_samples']} = "
              f"{result['iw_bound']:.2f} nats on {result['num_examples']} {result['split']} "
              f"examples; full result in {output}", file=sys.stderr)
        print(json.dumps(summary))


if __name__ == "__main__":
    cli.run(main, define_flags)
