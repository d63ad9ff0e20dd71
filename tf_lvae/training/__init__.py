"""Training: the Keras train step (warm-up, MC x IW samples), the fit loop with exact resume,
tf.distribute strategies, gradient clipping and the per-epoch diagnostics.

Reading order: train_step, loop, fault_tolerance; distribute (and tf_lvae/fast/step_loop.py)
are what the step runs on.
"""
