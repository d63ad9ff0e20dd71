"""Train a Ladder VAE or VAE.

    python -m tf_lvae.train --dataset=mnist --data_dir=DIR --model_dir=runs/mnist_lvae
    python -m tf_lvae.train --config=configs/quick.py --model_dir=runs/quick
    python -m tf_lvae.train --dataset=binarized_mnist --model=vae --layers=3 --epochs=5 \
        --config.train.warmup_epochs=2

--dataset picks configs/<dataset>.py (the paper's settings); --config=FILE uses another
config file; --config.<section>.<field>=VALUE overrides any field. Rerunning with the same
--model_dir resumes from its latest checkpoint. One trainer at a time owns a model_dir (a
second one is refused, exit code 2); a full or read-only disk stops training with one line
naming the last good checkpoint.
"""
import sys

from absl import app
from absl import flags

from tf_lvae import cli

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    with cli.clear_errors(FLAGS.model_dir, after="training resumes from that checkpoint"):
        experiment = cli.resolved_config()  # before TensorFlow loads: a typo fails at once
        with cli.loading_tensorflow():
            from tf_lvae.training import loop
        loop.train(experiment, FLAGS.model_dir)
        print(f"trained model in {FLAGS.model_dir}")


if __name__ == "__main__":
    cli.run(main, lambda: cli.define_training_flags(sys.argv), load_tensorflow_first=False)
