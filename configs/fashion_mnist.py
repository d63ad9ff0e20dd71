"""Fashion-MNIST, dynamically binarized like MNIST.

    python -m tf_lvae.train --dataset=fashion_mnist --data_dir=/path/to/fashion_idx_files
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "fashion_mnist"
    config.data.train_split = "train+validation"
    return config
