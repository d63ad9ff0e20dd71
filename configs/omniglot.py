"""The paper's OMNIGLOT setting: 28x28, dynamically binarized, 1500 epochs.

    python -m tf_lvae.train --dataset=omniglot --data_dir=/folder/with/chardata.mat
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "omniglot"
    config.data.train_split = "train+validation"
    config.train.epochs = 1500
    return config
