"""Evaluation: L_1 and the importance-weighted L_K on whole splits, the population batch-norm
statistics every evaluation uses, and the evaluation of a saved model_dir.

likelihood.py is the reference path; tf_lvae/fast/log_weights.py is its speed-only twin (folded
batch norm, fused heads) guarded by equality tests in tests/test_performance_paths.py.
"""
