"""Export a trained model as a versioned SavedModel for TF Serving.

    python -m tf_lvae.export --model_dir=runs/quick --export_dir=exports/lvae
    python -m tf_lvae.export --pretrained=mnist_lvae5 --export_dir=exports/mnist_lvae5
    python -m tf_lvae.export --model_dir=runs/quick --export_dir=exports/lvae --version=7 \
        --max_num_samples=64 --serving_iw_samples=1000

Writes EXPORT_DIR/<version>/saved_model.pb (+ variables/), the layout TF Serving watches;
<version> defaults to one more than the largest version already there, with TF Serving's
warm-up requests in assets.extra/. Signatures (version 2, every input batched): encode, sample,
sample_per_layer, keep_top, interpolate, decode, reconstruct, log_likelihood;
--signature_version=1 writes the earlier scalar-input set (see tf_lvae/serving/signatures.py,
export/README.md).
Prints the path of the new version on the last line.
"""
import sys

from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A model_dir trained by tf_lvae.train.")
flags.DEFINE_string("pretrained", None, "Instead of --model_dir: a model shipped with the "
                    "package (tf_lvae.storage.model_zoo.available()).")
flags.DEFINE_string("export_dir", None, "Folder of versioned SavedModels (TF Serving's "
                    "model base path).", required=True)
flags.DEFINE_integer("version", None, "Version number (default: the next free one).")
flags.DEFINE_integer("signature_version", 2, "2: every input has a batch dimension (TF "
                     "Serving can batch requests); 1: the earlier scalar-input sample and "
                     "log_likelihood.")
flags.DEFINE_integer("max_num_samples", 1000, "Cap of the images one `sample` request draws.")
flags.DEFINE_integer("serving_iw_samples", 100, "K of `log_likelihood` (signature version 2: "
                     "fixed at export).")
flags.DEFINE_integer("max_iw_samples", 5000, "Cap of `log_likelihood`'s num_samples (K; "
                     "signature version 1).")
flags.DEFINE_integer("iw_chunk_size", 100, "Importance samples per chunk of `log_likelihood` "
                     "(memory ~ batch * chunk).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with cli.clear_errors(after="nothing was published: the versions already in --export_dir "
                          "are intact and the model_dir is untouched",
                          elsewhere="use another --export_dir"):
        from tf_lvae.serving import signatures as serving  # imported late: --help stays fast
        from tf_lvae.serving import versioned_export
        limits = serving.ServingLimits(FLAGS.max_num_samples, FLAGS.max_iw_samples,
                                       FLAGS.iw_chunk_size, FLAGS.serving_iw_samples)
        from tf_lvae.storage import model_dir as model_dir_lib
        try:
            with model_dir_lib.storage_errors(f"the export to {FLAGS.export_dir}"):
                if (FLAGS.model_dir is None) == (FLAGS.pretrained is None):
                    raise ValueError("pass exactly one of --model_dir (a trained model_dir) "
                                     "and --pretrained (a shipped model)")
                if FLAGS.pretrained:
                    path = versioned_export.export_pretrained(
                        FLAGS.pretrained, FLAGS.export_dir, FLAGS.version, limits,
                        FLAGS.signature_version)
                else:
                    path = versioned_export.export_model_dir(
                        FLAGS.model_dir, FLAGS.export_dir, FLAGS.version, limits,
                        FLAGS.signature_version)
        except versioned_export.ExportError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        names = serving.SIGNATURES_BY_VERSION[FLAGS.signature_version]
        print(f"exported signatures {', '.join(names)} (version {FLAGS.signature_version}) to",
              file=sys.stderr)
        print(path)


if __name__ == "__main__":
    cli.run(main)
