"""Table 1's fine-tuning: continue a finished MNIST model with a decaying learning rate and more samples.

The paper trains a finished model 2000 more epochs with the learning rate times 0.75 every
200 epochs and 10 Monte-Carlo x 10 importance samples per example (eq. 6; beta stays 1). The
new run starts from the weights of `train.init_from` (a finished model_dir, left untouched) with
a fresh optimizer; rerunning the same command resumes the fine-tuning run itself, schedule
included (it is a function of the optimizer's step).

    python -m tf_lvae.train --config=configs/mnist_finetune.py --data_dir=DIR \\
        --config.train.init_from=runs/mnist_lvae --model_dir=runs/mnist_lvae_finetuned

The model options must match the finished model's: for a model trained with
configs/mnist_authors.py pass `--config=configs/mnist_finetune.py:authors`.
"""
from tf_lvae.configs import mnist
from tf_lvae.configs import mnist_authors


def get_config(settings="paper"):
    if settings not in ("paper", "authors"):
        raise ValueError(f"mnist_finetune takes 'paper' or 'authors', got {settings!r}")
    config = mnist_authors.get_config() if settings == "authors" else mnist.get_config()
    config.train.epochs = 2000
    config.train.warmup_epochs = 0        # beta = 1 throughout: the model is trained already
    config.train.lr_decay_factor = 0.75
    config.train.lr_decay_every_epochs = 200
    config.train.mc_samples = 10
    config.train.iw_samples = 10
    return config
