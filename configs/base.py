"""Settings shared by every experiment: the paper's defaults (Sønderby et al., 2016, Sec. 3).

Every field, its default and what it means is in tf_lvae/experiment_config.py (DataSettings,
the ModelSpec, TrainSettings, EvalSettings); data-set files override what differs, and any
field can be overridden on the command line, e.g.
`python -m tf_lvae.train --dataset=mnist --config.train.epochs=5`.
"""
from tf_lvae import experiment_config


def base_config():
    return experiment_config.default_config()
