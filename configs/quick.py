"""A short real run on the shipped binarized MNIST: the paper's 5-layer LVAE for a few epochs.

    python -m tf_lvae.train --config=configs/quick.py --model_dir=runs/quick
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "binarized_mnist"
    config.train.epochs = 10
    config.train.warmup_epochs = 5
    config.train.eval_every_epochs = 5
    config.eval.iw_samples = 500
    return config
