"""MNIST's grey levels as continuous data: dequantized MNIST with a Gaussian p(x|z).

The same idx files as `mnist`, but instead of binarizing, each grey level k becomes
x = (k + u) / 256 with fresh u ~ U[0, 1) every training epoch (test split drawn once, fixed
seed): real continuous data on which the Gaussian likelihood of the NORB setting can be trained
and checked offline. p(x|z_1) = N(Linear(d), Softplus(Linear(d)) + 1e-5) per pixel; leaky ReLU
as for MNIST. A good model's log-likelihood of this density on [0, 1)^784 is positive (thousands
of nats); subtract 784 log 256 = 4,347 nats for a bound on the 8-bit images' log-probability.

    python -m tf_lvae.train --dataset=mnist_dequantized --data_dir=/path/to/mnist_idx_files \
        --model_dir=runs/mnist_gaussian
    python -m tf_lvae.evaluate --model_dir=runs/mnist_gaussian --iw_samples=5000
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "mnist_dequantized"
    config.data.train_split = "train+validation"
    config.model.activation = "leaky_relu"
    config.model.likelihood = "gaussian"
    return config
