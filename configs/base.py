"""Settings shared by every experiment: the paper's defaults (Sønderby et al., 2016, Sec. 3).

Data-set files override what differs; any field can be overridden on the command line, e.g.
`python -m tf_lvae.train --dataset=mnist --config.train.epochs=5`.
"""
import ml_collections
from ml_collections import config_dict


def base_config():
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "binarized_mnist"
    config.data.data_dir = config_dict.placeholder(str)  # None: shipped data or TFDS
    config.data.train_split = "train"        # or "train+validation" (the paper's full train set)
    config.data.eval_split = "test"          # split evaluated during and after training
    config.data.num_validation = -1          # held-out examples; -1: the data set's default
    config.data.max_train_examples = 0       # > 0: train on the first N only (smoke runs)

    config.model = ml_collections.ConfigDict()
    config.model.inference = "lvae"           # lvae | vae
    config.model.latent_sizes = (64, 32, 16, 8, 4)
    config.model.hidden_sizes = (512, 256, 128, 64, 32)
    config.model.activation = "leaky_relu"    # leaky_relu (MNIST, OMNIGLOT) | tanh (NORB)
    config.model.batch_norm = True
    config.model.likelihood = "auto"          # auto (from the data set) | bernoulli | gaussian
    config.model.variance_floor = 1e-5
    # The paper's text by default; configs/mnist_authors.py sets what the authors' code runs
    # (tf_lvae.model_spec.ModelSpec documents each).
    config.model.leaky_relu_slope = 0.1
    config.model.batch_norm_heads = False
    config.model.upward_input = "hidden"      # LVAE: d_{i-1} (eq. 13) | mean: mu_hat_{i-1}
    config.model.share_top_down = True        # LVAE: inference top-down = generative one

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 2000
    config.train.batch_size = 256
    config.train.learning_rate = 1e-3
    config.train.adam_epsilon = 1e-4          # the authors' Adam epsilon
    config.train.warmup_epochs = 200          # beta 0 -> 1 over these epochs; 0 disables
    config.train.mc_samples = 1
    config.train.iw_samples = 1
    config.train.seed = 0
    # The authors' gradient clipping (tf_lvae/gradient_clipping.py): global norm, then each
    # element; 0 disables either (the paper does not clip; configs/mnist_authors.py: 4, 0.9).
    config.train.clip_global_norm = 0.0
    config.train.clip_value = 0.0
    # Learning rate x lr_decay_factor every lr_decay_every_epochs epochs (0: constant); the
    # paper's fine-tuning uses 0.75 every 200 (configs/mnist_finetune.py).
    config.train.lr_decay_factor = 1.0
    config.train.lr_decay_every_epochs = 0
    config.train.init_from = ""               # a model_dir whose weights a new run starts from
    config.train.jit_compile = True
    # float32 | mixed_bfloat16 | mixed_float16 (loss-scaled): 16-bit MLP matmuls with float32
    # weights, distribution heads and log-densities (for GPUs/TPUs; CPUs gain nothing)
    config.train.precision = "float32"
    # Up to this many train steps per call into TensorFlow: with XLA (jit_compile) and no
    # strategy they run as one XLA loop, -16 to -20% time per step on MNIST
    # (docs/PERFORMANCE.md). The largest divisor of the steps per epoch (and of a resumed
    # epoch's done steps) not above it is used, so no call spans two epochs: 65 of MNIST's
    # 195, all 87 of NORB's and all 89 of Omniglot's (a prime). Progress, checkpoints and
    # runs of skipped steps are seen at call ends (~1.5-2 s apart); 1: after every step.
    config.train.steps_per_execution = 100
    config.train.eval_every_epochs = 10       # L_1 on eval_split during training; 0 disables
    # Scale-out and fault tolerance (docs/FAULT_TOLERANCE.md); batch_size is the global batch.
    config.train.strategy = "default"         # default | mirrored | multi_worker (TF_CONFIG) | tpu
    config.train.tpu = ""                     # TPU name or address for strategy=tpu
    config.train.sync_batch_norm = False      # batch statistics over the global batch
    config.train.checkpoint_every_steps = 500  # and at every epoch end; 0: epoch ends only
    config.train.max_consecutive_skips = 10   # non-finite steps in a row before training stops
    config.train.diagnostics_every_epochs = 10  # small-K L_K, per-unit KL, images; 0 disables
    config.train.diagnostics_iw_samples = 100   # K of the diagnostics L_K
    config.train.diagnostics_examples = 1000    # examples of the eval and train subsets
    config.train.verbose = 1                  # Keras: 1 progress bar, 2 one line per epoch, 0 silent

    config.eval = ml_collections.ConfigDict()
    config.eval.iw_samples = 5000
    config.eval.batch_size = 256              # examples per L_1 batch
    config.eval.iw_batch_size = 20            # examples per L_K batch
    config.eval.chunk_size = 1000             # importance samples per chunk (memory ~ batch*chunk)
    config.eval.seed = 0
    # BatchNorm statistics of every evaluation and export: population (one pass over the
    # training split under the final weights, as the authors' code) | moving (Keras' averages)
    config.eval.bn_statistics = "population"
    config.eval.bn_statistics_batch_size = 2000  # examples per batch of that pass
    return config
