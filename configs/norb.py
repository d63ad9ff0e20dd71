"""The paper's NORB setting: small NORB as the authors prepared it, Gaussian p(x|z), tanh.

Data (`tf_lvae.data.norb`): TFDS smallnorb's left-camera 96x96 images resized to 32x32 by
MATLAB-style bicubic interpolation (the authors' `...-32x32-...-matlab-bicubic.mat` files),
dequantized x = (k + u) / 256 with fresh u ~ U[0, 1) every training epoch (the test split
drawn once, fixed seed). Model: p(x|z_1) = N(Linear(d), Softplus(Linear(d)) + 1e-5) per pixel,
tanh MLPs; all 24,300 training images, 2000 epochs, the paper's defaults otherwise.

    python -m tf_lvae.train --dataset=norb --model_dir=runs/norb   # TFDS smallnorb prepared
    python -m tf_lvae.evaluate --model_dir=runs/norb --iw_samples=5000

smallnorb is not shipped: either a TFDS data dir with it prepared (`--data_dir=DIR`) or its six
raw files in $TF_LVAE_TFDS_MANUAL_DIR (see the README's "Data").
"""
from tf_lvae.configs import base


def get_config():
    config = base.base_config()
    config.data.dataset = "norb"
    config.data.train_split = "train+validation"
    config.model.activation = "tanh"
    config.model.likelihood = "gaussian"
    return config
