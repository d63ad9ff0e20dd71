"""tf_lvae: Ladder Variational Autoencoders (Sønderby et al., NIPS 2016) in TensorFlow/Keras.

The public Python API (README "Python API" runs it):

    import tf_lvae
    spec = tf_lvae.ModelSpec(latent_sizes=(64, 32, 16, 8, 4))   # the paper's 5-layer LVAE
    model = tf_lvae.build_model(spec)                            # a keras.Model (TrainableVAE)
    model.configure_objective(mc_samples=1, iw_samples=1, warmup_steps=1000)
    model.compile(optimizer=tf_lvae.make_optimizer(1e-3))
    model.fit(images_dataset, epochs=5)                          # batches [B, 28, 28, 1] in [0, 1]
    result = tf_lvae.evaluate_model(model, test_images, iw_samples=100)  # L_1 and L_K
    images = model.sample(16, seed=0); posterior = model.encode(test_images[:4])
    model = tf_lvae.load_model_dir("runs/quick")    # a trained model_dir, BN statistics ready
    tf_lvae.export_model(model, "exports/lvae")     # a TF Serving SavedModel version
    model.save("lvae.keras"); keras.models.load_model("lvae.keras")

Importing tf_lvae registers the model classes with Keras (so `keras.models.load_model` finds
them); the other names are imported on first use. Command lines (`python -m tf_lvae.train` ...)
skip the registration: they parse their flags before anything loads TensorFlow, so a typo is
reported at once, and import the model when they need it.
"""
import importlib
import sys

__version__ = "0.1.0"

if sys.argv[:1] != ["-m"]:  # "-m" while `python -m tf_lvae.<cli>` imports this package
    # registers the model classes with Keras (HierarchicalVAE, TrainableVAE)
    from tf_lvae.training import train_step as _train_step  # noqa: F401

# public name -> (module, attribute)
_API = {
    "ModelSpec": ("tf_lvae.model.spec", "ModelSpec"),
    "HierarchicalVAE": ("tf_lvae.model.hierarchical_vae", "HierarchicalVAE"),  # the model
    "TrainableVAE": ("tf_lvae.training.train_step", "TrainableVAE"),  # + Keras train step
    "build_model": ("tf_lvae.training.train_step", "build_model"),    # a TrainableVAE
    "make_optimizer": ("tf_lvae.training.loop", "make_optimizer"),
    # not `train` / `evaluate` / `export`: those names are the CLI modules (python -m ...)
    "train_model_dir": ("tf_lvae.training.loop", "train"),
    "load_model_dir": ("tf_lvae.api", "load_model_dir"),
    "evaluate_model": ("tf_lvae.api", "evaluate_model"),
    "export_model": ("tf_lvae.api", "export_model"),
    "population_statistics": ("tf_lvae.api", "use_population_statistics"),
    "pretrained": ("tf_lvae.storage.model_zoo", "load"),  # tf_lvae.pretrained("mnist_lvae5")
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'tf_lvae' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return __all__
