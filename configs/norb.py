"""The paper's NORB setting: small NORB, 32x32 grayscale in [0, 1], Gaussian p(x|z), tanh.

    python -m tf_lvae.train --dataset=norb   # needs TFDS smallnorb prepared (see README)
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "norb"
    config.data.train_split = "train+validation"
    config.model.activation = "tanh"
    config.model.likelihood = "gaussian"
    return config
