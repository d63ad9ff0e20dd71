"""Hyperparameter search with keras-tuner: the hypermodel, the search and its results table."""
