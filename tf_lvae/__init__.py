"""tf_lvae: Ladder Variational Autoencoders (Sønderby et al., NIPS 2016) in TensorFlow/Keras."""
__version__ = "0.1.0"
