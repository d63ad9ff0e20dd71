"""Serving signatures of a trained model, as a SavedModel that TF Serving's own loader runs.

Every signature takes and returns plain tensors (no distribution objects); batch dims are None.

  encode          images [B, h, w, c] float32 in [0, 1]
                  -> z1_mean, z1_stddev, ..., zL_mean, zL_stddev  [B, D_i], bottom to top:
                  the deterministic posterior (means propagated; for the LVAE the
                  precision-weighted q of eqs 17-19).
  sample          num_samples int32 [], seed int32 [], temperature float32 []
                  -> images [num_samples, h, w, c] (Bernoulli probabilities or Gaussian
                  means); the same seed gives the same images (stateless normal noise).
  decode          z1_noise, ..., zL_noise float32 [B, D_i] (standard-normal noise per layer)
                  -> images [B, h, w, c]; multiplying every noise by T is temperature T.
  reconstruct     images [B, h, w, c] -> images [B, h, w, c] (posterior-mean reconstruction)
  log_likelihood  images [B, h, w, c], num_samples int32 [] (K), seed int32 []
                  -> log_likelihood [B]: the importance-weighted bound L_K per example, in
                  nats (anomaly scoring), streamed like tf_lvae.evaluation. A Bernoulli
                  model's images must be binary (0 or 1) here.

Inputs are checked inside the graph (tf.debugging asserts), so a bad request fails with an
InvalidArgumentError that says what was wrong, in TF Serving as in Python. Keras 3 models
must be exported through `keras.export.ExportArchive`: `tf.saved_model.save` of the model
itself loads in Python but not in TF Serving's loader. Writing numbered versions safely:
`tf_lvae.versioned_export`.
"""
import dataclasses

import keras
import tensorflow as tf

from tf_lvae import evaluation

SIGNATURES = ("encode", "sample", "decode", "reconstruct", "log_likelihood")


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """Caps baked into the exported graph (requests beyond them are refused).

    max_num_samples: largest `num_samples` of `sample`.
    max_iw_samples: largest K of `log_likelihood` (cost grows linearly in K).
    iw_chunk_size: importance samples per chunk of `log_likelihood` (memory ~ B * chunk).
    """
    max_num_samples: int = 1000
    max_iw_samples: int = 5000
    iw_chunk_size: int = 100

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{field.name} must be an integer >= 1, got {value!r}")


# ----------------------------------------------------------------------------- validation
def _after(checks, *tensors):
    """The tensors, made to depend on the assert ops so no result exists if one fails."""
    with tf.control_dependencies(checks):
        return [tf.identity(t) for t in tensors]


def _shape_check(tensor, name, trailing):
    """Assert tensor has shape [batch, *trailing], reporting the shape it has.

    Compared after padding with -1 so a tensor of the wrong rank fails this assert rather
    than a broadcast inside it. (The signature declares the shape too, but TF Serving feeds
    tensors without checking it.)
    """
    rank = len(trailing) + 1
    padded = tf.pad(tf.shape(tensor), [[0, rank]], constant_values=-1)[1:rank + 1]
    expected = ", ".join(str(size) for size in trailing)
    return tf.debugging.Assert(
        tf.reduce_all(tf.equal(padded, tf.constant([*trailing, -1], tf.int32))),
        [f"{name} must have shape [batch, {expected}], got shape", tf.shape(tensor)])


def _checked_images(images, spec, binary=False):
    """images [B, h, w, c] float32, asserted to have the model's shape and values in [0, 1]."""
    images, = _after([_shape_check(images, "images", spec.image_shape)], images)
    checks = [  # after the shape check: these reduce over the 4 axes the signature declares
        tf.debugging.assert_greater_equal(
            images, 0.0, message="images must be finite pixel values in [0, 1]"),
        tf.debugging.assert_less_equal(
            images, 1.0, message="images must be finite pixel values in [0, 1]"),
    ]
    if binary:
        checks.append(tf.debugging.assert_equal(
            tf.logical_or(tf.equal(images, 0.0), tf.equal(images, 1.0)), True,
            message="log_likelihood of a Bernoulli model needs binary images (pixels 0 or 1); "
                    "binarize them first"))
    return _after(checks, images)[0]


def _checked_scalar(value, name):
    """value reshaped to a scalar, asserted to hold exactly one element."""
    # The signature declares shape [], so tf.size(value) would be folded to 1 at load time;
    # PlaceholderWithDefault hides the static shape and keeps the check at run time.
    size = tf.size(tf.compat.v1.placeholder_with_default(tf.reshape(value, [-1]), [None]))
    check = tf.debugging.Assert(tf.equal(size, 1),
                                [f"{name} must be a scalar (one value), got", size, "values"])
    with tf.control_dependencies([check]):
        return tf.reshape(value, [])


def _checked_count(count, name, maximum):
    """An int32 scalar asserted to lie in [1, maximum]."""
    count = _checked_scalar(count, name)
    checks = [
        tf.debugging.assert_positive(count, message=f"{name} must be >= 1"),
        tf.debugging.assert_less_equal(
            count, maximum, message=f"{name} must be <= {maximum} (the cap of this export)"),
    ]
    return _after(checks, count)[0]


# ----------------------------------------------------------------------------- signatures
def _signature_functions(model, limits):
    """{name: (fn, input_signature)} of every serving signature of `model`."""
    spec = model.spec
    images_spec = tf.TensorSpec([None, *spec.image_shape], tf.float32, name="images")

    def scalar(name, dtype):
        return tf.TensorSpec([], dtype, name=name)

    def encode(images):
        images = _checked_images(images, spec)
        outputs = {}
        for i, (mean, stddev) in enumerate(model.encode(images), start=1):
            outputs[f"z{i}_mean"], outputs[f"z{i}_stddev"] = mean, stddev
        return outputs

    def sample(num_samples, seed, temperature):
        num_samples = _checked_count(num_samples, "num_samples", limits.max_num_samples)
        seed = _checked_scalar(seed, "seed")
        temperature = _checked_scalar(temperature, "temperature")
        temperature, = _after([tf.debugging.assert_positive(  # NaN fails this too
            temperature, message="temperature must be > 0 (it scales the prior stddevs)")],
            temperature)
        return {"images": model.sample(num_samples, temperature, seed)}

    noise_names = [f"z{i}_noise" for i in range(1, spec.num_layers + 1)]

    def decode(noises):
        noises = [noises[name] for name in noise_names]
        noises = _after([_shape_check(noise, name, [size]) for name, noise, size
                         in zip(noise_names, noises, spec.latent_sizes)], *noises)
        checks = [tf.debugging.assert_all_finite(noise, f"{name} must be finite")
                  for name, noise in zip(noise_names, noises)]
        checks += [tf.debugging.assert_equal(
            tf.shape(noise)[0], tf.shape(noises[0])[0],
            message=f"{name} must have the batch size of {noise_names[0]}")
            for name, noise in zip(noise_names[1:], noises[1:])]
        return {"images": model.decode_noise(_after(checks, *noises))}

    def reconstruct(images):
        return {"images": model(_checked_images(images, spec), training=False)}

    def log_likelihood(images, num_samples, seed):
        images = _checked_images(images, spec, binary=spec.likelihood == "bernoulli")
        num_samples = _checked_count(num_samples, "num_samples", limits.max_iw_samples)
        seed = _checked_scalar(seed, "seed")
        bound = evaluation.iw_bound_per_example(model, images, num_samples,
                                                limits.iw_chunk_size, seed=seed)
        return {"log_likelihood": bound}

    noise_specs = {name: tf.TensorSpec([None, size], tf.float32, name=name)
                   for name, size in zip(noise_names, spec.latent_sizes)}
    return dict(
        encode=(encode, [images_spec]),
        sample=(sample, [scalar("num_samples", tf.int32), scalar("seed", tf.int32),
                         scalar("temperature", tf.float32)]),
        decode=(decode, [noise_specs]),
        reconstruct=(reconstruct, [images_spec]),
        log_likelihood=(log_likelihood, [images_spec, scalar("num_samples", tf.int32),
                                         scalar("seed", tf.int32)]),
    )


def build_archive(model, limits=ServingLimits()):
    """A keras.export.ExportArchive of `model` with every signature of SIGNATURES.

    `encode` is registered first, so it is also `serving_default`.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, input_signature) in _signature_functions(model, limits).items():
        archive.add_endpoint(name, fn, input_signature)
    return archive
