"""Serving signatures of a trained model, as a SavedModel that TF Serving's own loader runs.

Every signature takes and returns plain tensors (no distribution objects). Signature version 2
(the default, `SIGNATURE_VERSION`) has a batch dimension B on every input, so TF Serving's
request batching (`--enable_batching`) can merge requests, and row r of every output depends
on row r of the inputs only (per-row seeds, BatchNorm in inference mode):

  encode            images [B, h, w, c] float32 in [0, 1]
                    -> z1_mean, z1_stddev, ..., zL_mean, zL_stddev  [B, D_i], bottom to top:
                    the deterministic posterior (means propagated; for the LVAE the
                    precision-weighted q of eqs 17-19). Also `serving_default`.
  sample            seed int32 [B], temperature float32 [B] > 0 -> images [B, h, w, c]
                    (Bernoulli probabilities or Gaussian means); row r is version 1's
                    `sample` of one image with seed[r].
  sample_per_layer  seed int32 [B], temperatures float32 [B, L] > 0 (column i-1: z_i)
  keep_top          images [B, h, w, c], layer int32 [B] in [1, L], seed [B], temperature [B]
                    -> images: posterior of layers k..L kept, layers below k redrawn
  interpolate       images_a, images_b [B, h, w, c], layer int32 [B], weight float32 [B] in
                    [0, 1] -> images: layer k's posterior mean moved from a's to b's
                    (`tf_lvae.model.generation` states each in full)
  decode            z1_noise, ..., zL_noise float32 [B, D_i] (standard-normal noise per layer)
                    -> images [B, h, w, c]; multiplying every noise by T is temperature T.
  reconstruct       images [B, h, w, c] -> images [B, h, w, c] (posterior-mean reconstruction)
  log_likelihood    images [B, h, w, c], seed int32 [B] -> log_likelihood [B]: the
                    importance-weighted bound L_K per example in nats (anomaly scoring), K fixed
                    at export (`ServingLimits.iw_samples`), row r drawn from seed[r] alone. A
                    Bernoulli model's images must be binary (0 or 1) here.

Version 1 (`--signature_version=1`, for clients written before version 2) has encode, decode
and reconstruct as above and scalar inputs in the other two, which TF Serving cannot batch:
  sample            num_samples int32 [], seed int32 [], temperature float32 [] -> images
  log_likelihood    images [B, h, w, c], num_samples int32 [] (K), seed int32 [] -> [B]

Inputs are checked inside the graph (tf.debugging asserts), so a bad request fails with an
InvalidArgumentError that says what was wrong, in TF Serving as in Python. Keras 3 models
must be exported through `keras.export.ExportArchive`: `tf.saved_model.save` of the model
itself loads in Python but not in TF Serving's loader. Writing numbered versions safely, with
warm-up requests: `tf_lvae.serving.versioned_export`.
"""
import dataclasses

import keras
import tensorflow as tf

from tf_lvae.evaluation import likelihood as evaluation
from tf_lvae.model import generation

SIGNATURE_VERSION = 2
SIGNATURES_BY_VERSION = {
    1: ("encode", "sample", "decode", "reconstruct", "log_likelihood"),
    2: ("encode", "sample", "sample_per_layer", "keep_top", "interpolate", "decode",
        "reconstruct", "log_likelihood"),
}
SIGNATURES = SIGNATURES_BY_VERSION[SIGNATURE_VERSION]


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """Caps and constants baked into the exported graph (requests beyond the caps are refused).

    max_num_samples: most images one `sample` / `sample_per_layer` call draws (version 1:
      the largest `num_samples`). Keep TF Serving's max_batch_size at or below it.
    max_iw_samples: largest K of version 1's `log_likelihood` (cost grows linearly in K).
    iw_chunk_size: importance samples per chunk of `log_likelihood` (memory ~ B * chunk).
    iw_samples: K of version 2's `log_likelihood`, fixed at export (`--serving_iw_samples`).
    """
    max_num_samples: int = 1000
    max_iw_samples: int = 5000
    iw_chunk_size: int = 100
    iw_samples: int = 100

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

    The rank is compared first and the sizes after padding with -1, so a tensor of another
    rank (a scalar too) fails this assert rather than a broadcast or a slice inside it. (The
    signature declares the shape too, but TF Serving feeds tensors without checking it.)
    """
    rank = len(trailing) + 1
    # The signature's static rank would fold tf.size(shape) to `rank` when TF Serving loads
    # the graph; PlaceholderWithDefault of unknown shape keeps the check at run time.
    shape = tf.shape(tf.compat.v1.placeholder_with_default(tensor, tf.TensorShape(None)))
    padded = tf.pad(shape, [[0, rank]], constant_values=-1)[1:rank]
    expected = "".join(f", {size}" for size in trailing)
    return tf.debugging.Assert(
        tf.logical_and(tf.equal(tf.size(shape), rank),
                       tf.reduce_all(tf.equal(padded, tf.constant(trailing, tf.int32)))),
        [f"{name} must have shape [batch{expected}], got shape", shape])


def _checked_images(images, spec, binary=False, name="images"):
    """images [B, h, w, c] float32, asserted to have the model's shape and values in [0, 1]."""
    images, = _after([_shape_check(images, name, spec.image_shape)], images)
    checks = [  # after the shape check: these reduce over the 4 axes the signature declares
        tf.debugging.assert_greater_equal(
            images, 0.0, message=f"{name} must be finite pixel values in [0, 1]"),
        tf.debugging.assert_less_equal(
            images, 1.0, message=f"{name} must be finite pixel values in [0, 1]"),
    ]
    if binary:
        checks.append(tf.debugging.assert_equal(
            tf.logical_or(tf.equal(images, 0.0), tf.equal(images, 1.0)), True,
            message="log_likelihood of a Bernoulli model needs binary images (pixels 0 or 1); "
                    "binarize them first"))
    return _after(checks, images)[0]


def _checked_rows(first, *others):
    """Tensors asserted to have shape [batch, *trailing], all with the batch size of the first.

    Each argument is (name, tensor, trailing shape); returns the tensors.
    """
    first_name, named = first[0], (first, *others)
    tensors = _after([_shape_check(t, name, trailing) for name, t, trailing in named],
                     *[t for _, t, _ in named])
    checks = [tf.debugging.assert_equal(
        tf.shape(t)[0], tf.shape(tensors[0])[0],
        message=f"{name} must have the batch size of {first_name}")
        for (name, _, _), t in zip(others, tensors[1:])]
    return _after(checks, *tensors)


def _checked_positive(value, name, what):
    """value asserted > 0 everywhere (NaN fails too)."""
    return _after([tf.debugging.assert_positive(value, message=f"{name} must be > 0 ({what})")],
                  value)[0]


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
def rowwise_iw_bound(model, images, seeds, num_samples, chunk_size):
    """L_K [B] of images [B, h, w, c], row r drawn from seeds[r] alone (int32 [B]).

    Each row is `evaluation.iw_bound_per_example` of that image alone, so a row's bound is
    the same in any batch (and equals version 1's `log_likelihood` of that one image).
    """
    def one_row(row):
        image, seed = row
        return evaluation.iw_bound_per_example(model, image[None], num_samples, chunk_size,
                                               seed=seed)[0]

    return tf.map_fn(one_row, (images, seeds), fn_output_signature=tf.float32)


def _common_functions(model):
    """{name: (fn, input_signature)} of the signatures both versions share."""
    spec = model.spec
    images_spec = tf.TensorSpec([None, *spec.image_shape], tf.float32, name="images")

    def encode(images):
        images = _checked_images(images, spec)
        outputs = {}
        for i, (mean, stddev) in enumerate(model.encode(images), start=1):
            outputs[f"z{i}_mean"], outputs[f"z{i}_stddev"] = mean, stddev
        return outputs

    noise_names = [f"z{i}_noise" for i in range(1, spec.num_layers + 1)]

    def decode(noises):
        noises = [noises[name] for name in noise_names]
        noises = _checked_rows(*[(name, noise, [size]) for name, noise, size
                                 in zip(noise_names, noises, spec.latent_sizes)])
        checks = [tf.debugging.assert_all_finite(noise, f"{name} must be finite")
                  for name, noise in zip(noise_names, noises)]
        return {"images": model.decode_noise(_after(checks, *noises))}

    def reconstruct(images):
        return {"images": model(_checked_images(images, spec), training=False)}

    noise_specs = {name: tf.TensorSpec([None, size], tf.float32, name=name)
                   for name, size in zip(noise_names, spec.latent_sizes)}
    return dict(encode=(encode, [images_spec]), decode=(decode, [noise_specs]),
                reconstruct=(reconstruct, [images_spec]))


def _version_1_functions(model, limits):
    """sample and log_likelihood with scalar inputs (signature version 1)."""
    spec = model.spec
    images_spec = tf.TensorSpec([None, *spec.image_shape], tf.float32, name="images")

    def scalar(name, dtype):
        return tf.TensorSpec([], dtype, name=name)

    def sample(num_samples, seed, temperature):
        num_samples = _checked_count(num_samples, "num_samples", limits.max_num_samples)
        seed = _checked_scalar(seed, "seed")
        temperature = _checked_positive(_checked_scalar(temperature, "temperature"),
                                        "temperature", "it scales the prior stddevs")
        return {"images": model.sample(num_samples, temperature, seed)}

    def log_likelihood(images, num_samples, seed):
        images = _checked_images(images, spec, binary=spec.likelihood == "bernoulli")
        num_samples = _checked_count(num_samples, "num_samples", limits.max_iw_samples)
        seed = _checked_scalar(seed, "seed")
        bound = evaluation.iw_bound_per_example(model, images, num_samples,
                                                limits.iw_chunk_size, seed=seed)
        return {"log_likelihood": bound}

    return dict(
        sample=(sample, [scalar("num_samples", tf.int32), scalar("seed", tf.int32),
                         scalar("temperature", tf.float32)]),
        log_likelihood=(log_likelihood, [images_spec, scalar("num_samples", tf.int32),
                                         scalar("seed", tf.int32)]),
    )


def _version_2_functions(model, limits):
    """The batchable sample, log_likelihood and layer-wise signatures (version 2)."""
    spec = model.spec
    num_layers = spec.num_layers

    def rows(name, dtype, *trailing):
        return tf.TensorSpec([None, *trailing], dtype, name=name)

    def images_spec(name="images"):
        return rows(name, tf.float32, *spec.image_shape)

    def capped_seeds(seed):
        return _after([tf.debugging.assert_less_equal(
            tf.shape(seed)[0], limits.max_num_samples,
            message=f"seed must have at most {limits.max_num_samples} rows (the cap of this "
                    "export)")], seed)[0]

    def sample(seed, temperature):
        seed, temperature = _checked_rows(("seed", seed, []), ("temperature", temperature, []))
        temperature = _checked_positive(temperature, "temperature",
                                        "it scales the prior stddevs")
        return {"images": generation.sample(model, capped_seeds(seed), temperature)}

    def sample_per_layer(seed, temperatures):
        seed, temperatures = _checked_rows(("seed", seed, []),
                                           ("temperatures", temperatures, [num_layers]))
        temperatures = _checked_positive(temperatures, "temperatures",
                                         "they scale each layer's prior stddevs")
        return {"images": generation.sample(model, capped_seeds(seed), temperatures)}

    def keep_top(images, layer, seed, temperature):
        images, layer, seed, temperature = _checked_rows(
            ("images", images, spec.image_shape), ("layer", layer, []), ("seed", seed, []),
            ("temperature", temperature, []))
        images = _checked_images(images, spec)
        temperature = _checked_positive(temperature, "temperature",
                                        "it scales the prior stddevs")
        return {"images": generation.keep_top(model, images, layer, seed, temperature)}

    def interpolate(images_a, images_b, layer, weight):
        images_a, images_b, layer, weight = _checked_rows(
            ("images_a", images_a, spec.image_shape), ("images_b", images_b, spec.image_shape),
            ("layer", layer, []), ("weight", weight, []))
        images_a = _checked_images(images_a, spec, name="images_a")
        images_b = _checked_images(images_b, spec, name="images_b")
        return {"images": generation.interpolate(model, images_a, images_b, layer, weight)}

    def log_likelihood(images, seed):
        images, seed = _checked_rows(("images", images, spec.image_shape), ("seed", seed, []))
        images = _checked_images(images, spec, binary=spec.likelihood == "bernoulli")
        bound = rowwise_iw_bound(model, images, seed, limits.iw_samples, limits.iw_chunk_size)
        return {"log_likelihood": bound}

    seed, temperature = rows("seed", tf.int32), rows("temperature", tf.float32)
    layer = rows("layer", tf.int32)
    return dict(
        sample=(sample, [seed, temperature]),
        sample_per_layer=(sample_per_layer,
                          [seed, rows("temperatures", tf.float32, num_layers)]),
        keep_top=(keep_top, [images_spec(), layer, seed, temperature]),
        interpolate=(interpolate, [images_spec("images_a"), images_spec("images_b"), layer,
                                   rows("weight", tf.float32)]),
        log_likelihood=(log_likelihood, [images_spec(), seed]),
    )


def signature_functions(model, limits=ServingLimits(), signature_version=SIGNATURE_VERSION):
    """{name: (fn, input_signature)} of every signature of `signature_version`, in the order
    of SIGNATURES_BY_VERSION."""
    if signature_version not in SIGNATURES_BY_VERSION:
        raise ValueError(f"signature_version must be one of {sorted(SIGNATURES_BY_VERSION)}, "
                         f"got {signature_version!r}")
    versioned = (_version_1_functions if signature_version == 1 else _version_2_functions)
    functions = dict(_common_functions(model), **versioned(model, limits))
    return {name: functions[name] for name in SIGNATURES_BY_VERSION[signature_version]}


def build_archive(model, limits=ServingLimits(), signature_version=SIGNATURE_VERSION):
    """A keras.export.ExportArchive of `model` with every signature of `signature_version`.

    `encode` is registered first, so it is also `serving_default`.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, input_signature) in signature_functions(model, limits,
                                                           signature_version).items():
        archive.add_endpoint(name, fn, input_signature)
    return archive
