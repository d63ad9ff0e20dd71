"""The public Python API: README's example as written, and Keras-native .keras files loaded in
a fresh process giving the same outputs."""
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tf_lvae
from tests.conftest import REPO_ROOT

SMALL = dict(image_shape=(6, 6, 1), latent_sizes=(5, 3), hidden_sizes=(12, 8))
AUTHORS = dict(batch_norm_heads=True, upward_input="mean", share_top_down=False,
               leaky_relu_slope=0.01)

# One fresh process for the checks below (each process pays TensorFlow's import): import
# tf_lvae as a user does, say which modules that loaded, then load each .keras file and write
# its outputs. argv: images.npy, then one path stem per model (STEM.keras -> STEM.npz).
FRESH_PROCESS = textwrap.dedent("""
    import sys
    import tf_lvae
    print(sorted(tf_lvae.__all__))
    print("loaded:", [name for name in ("tf_lvae.training.loop",
                                        "tf_lvae.serving.versioned_export")
                      if name in sys.modules])
    import keras, numpy as np, tensorflow as tf
    images = np.load(sys.argv[1])
    for stem in sys.argv[2:]:
        model = keras.models.load_model(stem + ".keras")
        x = model.flatten_images(images)
        np.savez(stem + ".npz", call=model(images).numpy(),
                 sample=model.sample(3, seed=5).numpy(),
                 encode=np.concatenate([m.numpy() for m, _ in model.encode(images)], 1),
                 log_weights=model.log_weights(x, 4, seed=tf.constant(9)).numpy(),
                 mc=model.mc_samples, iw=model.iw_samples)
""")
MODELS = {"paper": {}, "authors": AUTHORS}


def _run(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                            capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory):
    """Models with trained-looking weights (BN statistics included), saved as .keras files and
    run by FRESH_PROCESS."""
    work = tmp_path_factory.mktemp("fresh")
    rng = np.random.default_rng(0)
    images = (rng.random((4, 6, 6, 1)) < 0.5).astype(np.float32)
    np.save(work / "images.npy", images)
    models = {}
    for name, options in MODELS.items():
        model = tf_lvae.build_model(tf_lvae.ModelSpec(**SMALL, **options))
        model.configure_objective(mc_samples=2, iw_samples=3, warmup_steps=7, noise_seed=1)
        for variable in model.weights:
            variable.assign(variable.numpy() + rng.normal(0, 0.1, variable.shape))
        model.save(work / f"{name}.keras")
        models[name] = model
    result = _run(FRESH_PROCESS, work / "images.npy", *(work / name for name in models))
    return dict(stdout=result.stdout, work=work, images=images, models=models)


@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_in_a_fresh_process(fresh_process, name):
    model, images = fresh_process["models"][name], fresh_process["images"]
    out = np.load(fresh_process["work"] / f"{name}.npz")
    import tensorflow as tf
    x = model.flatten_images(images)
    expected = dict(call=model(images).numpy(), sample=model.sample(3, seed=5).numpy(),
                    encode=np.concatenate([m.numpy() for m, _ in model.encode(images)], 1),
                    log_weights=model.log_weights(x, 4, seed=tf.constant(9)).numpy())
    for key, value in expected.items():   # same weights, same kernels: the same numbers
        np.testing.assert_allclose(out[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
    assert (int(out["mc"]), int(out["iw"])) == (2, 3)


def _readme_python_example():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    result = subprocess.run([sys.executable, "-c", _readme_python_example()],
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    bounds = re.search(r"L_1 (-?[\d.]+), L_50 (-?[\d.]+) nats", result.stdout)
    assert bounds, result.stdout
    l1, l50 = map(float, bounds.groups())
    assert -300 < l1 <= l50 < 0   # a trained model: L_K >= L_1 (up to MC noise), finite
    assert (tmp_path / "lvae.keras").is_file()


def test_public_names_are_lazy_and_complete(fresh_process):
    names, loaded = fresh_process["stdout"].splitlines()[:2]
    assert loaded == "loaded: []"   # `import tf_lvae` loaded neither the trainer nor export
    for name in ("ModelSpec", "build_model", "train_model_dir", "load_model_dir",
                 "evaluate_model", "export_model", "make_optimizer", "population_statistics"):
        assert f"'{name}'" in names
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tf_lvae.nope
    # the CLI modules keep their names: `from tf_lvae import evaluate` is the (thin) entry point
    from tf_lvae import evaluate
    assert hasattr(evaluate, "main") and not hasattr(evaluate, "evaluate_model_dir")
