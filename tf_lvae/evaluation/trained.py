"""Evaluating a trained model_dir or a shipped model on a whole split: L_1, L_K, active units,
with the population batch-norm statistics (what `python -m tf_lvae.evaluate` runs)."""
import platform
import time

from tf_lvae import data
from tf_lvae import experiment_config
from tf_lvae.evaluation import batch_norm_statistics
from tf_lvae.evaluation import likelihood
from tf_lvae.storage import checkpoints
from tf_lvae.storage import model_zoo


def evaluate_model_dir(model_dir, iw_samples=None, split=None, data_dir=None, chunk_size=None,
                       iw_batch_size=None, max_examples=None, seed=0, verbose=1,
                       bn_statistics=None):
    """Load model_dir's latest checkpoint and evaluate it; returns the result dict.

    bn_statistics: 'population' or 'moving' (`tf_lvae.evaluation.batch_norm_statistics`); None: the
    config's eval.bn_statistics.
    """
    model, config, epochs = checkpoints.load_model(model_dir)
    experiment = experiment_config.resolve(config)
    bn_start = time.time()
    bn_statistics = batch_norm_statistics.for_evaluation(model, experiment, bn_statistics,
                                                         data_dir=data_dir)
    return _evaluate(model, experiment, epochs, bn_statistics, time.time() - bn_start, iw_samples,
                     split, data_dir, chunk_size, iw_batch_size, max_examples, seed, verbose)


def evaluate_pretrained(name, iw_samples=None, split=None, data_dir=None, chunk_size=None,
                        iw_batch_size=None, max_examples=None, seed=0, verbose=1):
    """`evaluate_model_dir` of a shipped model (`tf_lvae.pretrained`), with the population
    statistics it ships with; data_dir: where its data set's files are."""
    card = model_zoo.model_card(name)
    result = _evaluate(model_zoo.load(name), experiment_config.resolve(card["config"]),
                       card["epochs"],
                       card["bn_statistics"], 0.0, iw_samples, split, data_dir, chunk_size,
                       iw_batch_size, max_examples, seed, verbose)
    result.update(pretrained=name)
    return result


def _evaluate(model, experiment, epochs, bn_statistics, bn_seconds, iw_samples, split,
              data_dir, chunk_size, iw_batch_size, max_examples, seed, verbose):
    data_settings, settings = experiment.data, experiment.eval
    split = split or data_settings.eval_split
    iw_samples = iw_samples or settings.iw_samples
    images, _ = data.load_arrays(data_settings.dataset, split,
                                 data_dir=data_dir or data_settings.data_dir,
                                 num_validation=data_settings.validation_size)
    if max_examples is not None:
        images = images[:max_examples]
    start = time.time()
    result = likelihood.evaluate_images(
        model, images, iw_samples=iw_samples, batch_size=settings.batch_size,
        iw_batch_size=iw_batch_size or settings.iw_batch_size,
        chunk_size=chunk_size or settings.chunk_size, seed=seed, verbose=verbose)
    result.update(dataset=data_settings.dataset, split=split, epochs_trained=epochs,
                  model=model.spec.inference, latent_sizes=list(model.spec.latent_sizes),
                  bn_statistics=bn_statistics, bn_statistics_seconds=round(bn_seconds, 2),
                  seed=seed,
                  seconds=round(time.time() - start, 2), hardware=platform.processor() or
                  platform.machine())
    return result
