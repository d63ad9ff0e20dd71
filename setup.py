"""tf_lvae: Ladder Variational Autoencoders (Sønderby et al., 2016) in TensorFlow/Keras."""
import setuptools

setuptools.setup(
    name="tf_lvae",
    version="0.1.0",
    description="Ladder Variational Autoencoders in TensorFlow/Keras with TFP distributions",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The top-level configs/ folder installs as tf_lvae.configs so installed users get it too.
    packages=setuptools.find_packages(include=["tf_lvae", "tf_lvae.*"]) + ["tf_lvae.configs"],
    package_dir={"tf_lvae.configs": "configs"},
    package_data={"tf_lvae.data": ["assets/*.npz"], "tf_lvae.storage": ["pretrained_models/*"]},
    install_requires=[
        "tensorflow>=2.20,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.20,<2.22",
        "tensorflow-datasets>=4.9.6",
        "importlib_resources",  # TFDS needs it to build data sets from local files
        "keras-tuner>=1.4.7",
        "scikit-learn",  # keras-tuner's Bayesian optimisation
        "tensorboard",
        "absl-py",
        "ml-collections>=0.1.1",
        "numpy",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        "serving": ["tensorflow-serving-api>=2.20"],
        "test": ["pytest", "pytest-xdist", "tensorflow-serving-api>=2.20"],
    },
)
