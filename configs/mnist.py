"""The paper's MNIST setting: dynamically binarized MNIST, 5-layer LVAE, 2000 epochs.

    python -m tf_lvae.train --dataset=mnist --data_dir=/path/to/mnist_idx_files
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "mnist"
    config.data.train_split = "train+validation"  # all 60k training images, as in the paper
    return config
