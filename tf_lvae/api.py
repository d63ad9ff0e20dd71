"""The library calls behind `tf_lvae`'s public API that no other module offers as one call."""
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae import data
from tf_lvae import experiment_config
from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.storage import checkpoints


def load_model_dir(model_dir, bn_statistics=batch_norm_statistics.DEFAULT_MODE, data_dir=None):
    """The trained model of `model_dir` (newest valid checkpoint), ready to evaluate or serve.

    bn_statistics: 'population' (recomputed over the training split it was trained on, as
    `tf_lvae.evaluate` does; needs that data set) or 'moving' (the checkpoint's averages).
    The model_dir is only read.
    """
    model, config, _ = checkpoints.load_model(model_dir)
    batch_norm_statistics.for_evaluation(model, experiment_config.resolve(config), bn_statistics,
                                         data_dir=data_dir)
    return model


def use_population_statistics(model, train_images, dataset="binarized_mnist",
                              batch_size=batch_norm_statistics.DEFAULT_BATCH_SIZE, seed=0):
    """Give a model trained in Python the population batch-norm statistics of its training
    images (float32 [N, h, w, c] in [0, 1], binarized or dequantized as `dataset` trains)."""
    view = batch_norm_statistics.training_view(train_images, data.get_spec(dataset),
                                               batch_size, seed)
    batch_norm_statistics.assign(batch_norm_statistics.population_statistics(model, view, seed))
    return model


def evaluate_model(model, images, iw_samples=experiment_config.EvalSettings.iw_samples, seed=0,
                   verbose=0, **kwargs):
    """L_1 and L_K of float32 images [N, h, w, c]: `evaluation.evaluate_images`'s dict (elbo,
    iw_bound, kl_per_layer, active_units_per_layer, ...)."""
    return evaluation.evaluate_images(model, images, iw_samples=iw_samples, seed=seed,
                                      verbose=verbose, **kwargs)


def export_model(model, export_dir, version=None, **kwargs):
    """Write `model` as the next TF Serving version under export_dir; returns its path."""
    from tf_lvae.serving import versioned_export  # the serving stack: only when exporting
    return versioned_export.export_model(model, export_dir, version, **kwargs)
