"""The paper's MNIST setting as the authors' code runs it (casperkaae/LVAE `run_models.py`).

Where the code differs from the paper's text (`shared/OFFICIAL_CODE.md`), this config follows the
code: batch norm on every latent mean and variance head, gradient clipping (global norm 4, then
each element to +-0.9), the LVAE's upward MLPs fed mu_hat (`-only_mu_up True`), a separate
inference top-down network (`-ladder_share_params False`), leaky rectifiers of slope 0.01
(Lasagne's `leaky_rectify`). Like every config it evaluates with population batch-norm
statistics (eval.bn_statistics). configs/mnist.py stays the paper's text.

    python -m tf_lvae.train --config=configs/mnist_authors.py --data_dir=/path/to/mnist_idx_files

Not taken from the code: its learning rate (0.002 by default, 0.0002 in its README; the paper
and this config: 0.001), its per-epoch warm-up steps (here beta rises every step) and its
Monte-Carlo KL (here analytic where exact).
"""
from tf_lvae.configs import mnist


def get_config():
    config = mnist.get_config()
    config.model.leaky_relu_slope = 0.01
    config.model.batch_norm_heads = True
    config.model.upward_input = "mean"
    config.model.share_top_down = False
    config.train.clip_global_norm = 4.0
    config.train.clip_value = 0.9
    return config
