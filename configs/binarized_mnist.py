"""Statically binarized MNIST (Larochelle), shipped with the package: works offline.

    python -m tf_lvae.train --dataset=binarized_mnist
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "binarized_mnist"
    return config
