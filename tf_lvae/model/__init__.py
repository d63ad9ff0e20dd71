"""The paper's model: its spec, layers, maths and the HierarchicalVAE (VAE and LVAE inference).

Imports nothing from training, evaluation or serving. Reading order: spec, gaussian_math,
layers, hierarchical_vae; then noise, bounds, active_units and generation.
"""
