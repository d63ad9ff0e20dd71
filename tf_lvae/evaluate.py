"""Evaluate a trained model: L_1 and the importance-weighted bound L_K on a whole split.

    python -m tf_lvae.evaluate --model_dir=runs/quick [--iw_samples=5000] [--split=test]
    python -m tf_lvae.evaluate --pretrained=mnist_lvae5 --data_dir=DIR   # a shipped model

Prints its progress (a bar on a terminal, a line every 30 s in a log), then the result as one
JSON object on the last line, and writes the same object to
MODEL_DIR/evaluation_<split>_K<iw_samples>.json (or --output=FILE).
"""
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS


def define_flags():
    """Flags of this CLI; defined only when run as a program, so importing is side-effect free."""
    flags.DEFINE_string("model_dir", None, "A model_dir written by tf_lvae.train.")
    flags.DEFINE_string("pretrained", None, "Instead of --model_dir: a model shipped with the "
                        "package (tf_lvae.model_zoo.available()); --output defaults to "
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


def evaluate_model_dir(model_dir, iw_samples=None, split=None, data_dir=None, chunk_size=None,
                       iw_batch_size=None, max_examples=None, seed=0, verbose=1,
                       bn_statistics=None):
    """Load model_dir's latest checkpoint and evaluate it; returns the result dict.

    bn_statistics: 'population' or 'moving' (`tf_lvae.batch_norm_statistics`); None: the
    config's eval.bn_statistics, 'population' for configs written before the field.
    """
    from tf_lvae import batch_norm_statistics
    from tf_lvae import model_dir as model_dir_lib
    model, config, epochs = model_dir_lib.load_model(model_dir)
    bn_start = time.time()
    bn_statistics = batch_norm_statistics.for_evaluation(model, config, bn_statistics,
                                                         data_dir=data_dir)
    return _evaluate(model, config, epochs, bn_statistics, time.time() - bn_start, iw_samples,
                     split, data_dir, chunk_size, iw_batch_size, max_examples, seed, verbose)


def evaluate_pretrained(name, iw_samples=None, split=None, data_dir=None, chunk_size=None,
                        iw_batch_size=None, max_examples=None, seed=0, verbose=1):
    """`evaluate_model_dir` of a shipped model (`tf_lvae.pretrained`), with the population
    statistics it ships with; data_dir: where its data set's files are."""
    from tf_lvae import model_zoo
    card = model_zoo.model_card(name)
    result = _evaluate(model_zoo.load(name), card["config"], card["epochs"],
                       card["bn_statistics"], 0.0, iw_samples, split, data_dir, chunk_size,
                       iw_batch_size, max_examples, seed, verbose)
    result.update(pretrained=name)
    return result


def _evaluate(model, config, epochs, bn_statistics, bn_seconds, iw_samples, split, data_dir,
              chunk_size, iw_batch_size, max_examples, seed, verbose):
    from tf_lvae import data, evaluation, experiment_config
    data_config, eval_config = config.get("data", {}), config.get("eval", {})
    split = split or data_config.get("eval_split", "test")
    iw_samples = iw_samples or eval_config.get("iw_samples", 5000)
    images, _ = data.load_arrays(
        data_config.get("dataset", "binarized_mnist"), split,
        data_dir=data_dir or data_config.get("data_dir"),
        num_validation=experiment_config.num_validation(data_config))
    if max_examples is not None:
        images = images[:max_examples]
    start = time.time()
    result = evaluation.evaluate_images(
        model, images, iw_samples=iw_samples, batch_size=eval_config.get("batch_size", 256),
        iw_batch_size=iw_batch_size or eval_config.get("iw_batch_size", 20),
        chunk_size=chunk_size or eval_config.get("chunk_size", 1000), seed=seed,
        verbose=verbose)
    result.update(dataset=data_config.get("dataset"), split=split, epochs_trained=epochs,
                  model=model.spec.inference, latent_sizes=list(model.spec.latent_sizes),
                  bn_statistics=bn_statistics, bn_statistics_seconds=round(bn_seconds, 2),
                  seed=seed,
                  seconds=round(time.time() - start, 2), hardware=platform.processor() or
                  platform.machine())
    return result


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
        if FLAGS.pretrained:
            if FLAGS.bn_statistics not in (None, "population"):
                raise ValueError("a pretrained model ships its population statistics only; "
                                 f"--bn_statistics={FLAGS.bn_statistics} is not available")
            result = evaluate_pretrained(FLAGS.pretrained, *args, verbose=verbose)
        else:
            result = evaluate_model_dir(FLAGS.model_dir, *args, verbose=verbose,
                                        bn_statistics=FLAGS.bn_statistics)
        from tf_lvae import model_dir as model_dir_lib
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
