"""tf.data input pipeline over in-memory images, with per-epoch binarization or dequantization.

Dynamic binarization (training on fresh Bernoulli draws of the grey levels each epoch) acts as a
regularizer and is the protocol of the LVAE / IWAE MNIST and Omniglot results. Dequantization
(NORB, dequantized MNIST) likewise draws fresh uniform noise inside each pixel's grey-level bin
every epoch, x = (k + u) / 256 (`tf_lvae.data.dequantization`). The draws are reproducible:
epoch e of a pipeline built with seed s always sees the same pixels, because each batch's noise
comes from `tf.random.stateless_uniform` keyed by a per-batch seed pair taken from
`tf.data.Dataset.random(rerandomize_each_iteration=True)`, which yields a new (but seed-determined)
stream on every new iteration of the data set, i.e. every epoch. Resumable training instead builds
each epoch on its own with `epoch=e` (stateless seeds from (seed, e)), so a restarted process
sees the same order and pixels for epoch e as an uninterrupted one.
"""
import tensorflow as tf

from tf_lvae.data import dequantization

# Offset between the shuffle seed and the binarization seed: the same op seed would give both
# streams the same Philox sequence, tying the pixel noise to the example order.
_NOISE_SEED_OFFSET = 1_000_003


def _binarize(images, seed):
    """float32 [B, h, w, c] intensities, int64 [2] seed -> float32 [B, h, w, c] of 0/1."""
    uniform = tf.random.stateless_uniform(tf.shape(images), seed=seed, dtype=images.dtype)
    return tf.cast(uniform < images, images.dtype)


def _dequantize(images, seed):
    """float32 [B, h, w, c] grey levels (k / 255 or already dequantized), int64 [2] seed ->
    float32 [B, h, w, c] (k + u) / 256 with fresh u."""
    uniform = tf.random.stateless_uniform(tf.shape(images), seed=seed, dtype=images.dtype)
    return dequantization.dequantize(images, uniform, xp=tf.math)


# The per-epoch noise of each `DataSpec.binarization` that has one.
_NOISE = {"dynamic": _binarize, "dequantize": _dequantize}


def _epoch_seed(seed, epoch):
    """The int64 [2] stateless seed of one epoch: a pure function of (seed, epoch)."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def make_dataset(images, spec, batch_size, shuffle=False, seed=0, repeat=False,
                 drop_remainder=False, epoch=None):
    """Batches `images` into a tf.data.Dataset.

    Args:
      images: float32 [N, h, w, c] in [0, 1] (numpy or tensor), e.g. from `load_arrays`.
      spec: the data set's `DataSpec`; (h, w, c) must equal `spec.image_shape`.
      batch_size: examples per batch.
      shuffle: training mode: reshuffle every epoch and, if `spec.binarization` is 'dynamic',
        binarize with fresh Bernoulli draws every epoch, if 'dequantize', dequantize the grey
        levels with fresh uniform noise every epoch. False: fixed order, images as given.
      seed: makes the shuffle order and the noise of every epoch reproducible (None:
        nondeterministic).
      repeat: repeat forever (each repetition is a new epoch: new order, new noise).
      drop_remainder: drop the last partial batch (gives a static batch dimension).
      epoch: with shuffle, build only epoch `epoch` (an int, or an int64 scalar tensor inside
        `Dataset.flat_map`): its order and noise come from stateless seeds (seed, epoch), so a
        resumed run rebuilds any epoch exactly (and can `.skip()` the batches it trained on).
        None: every iteration of the returned dataset is the next epoch, as described above.

    Returns:
      A dataset of float32 batches [B, h, w, c] (no labels).
    """
    with tf.device("/CPU:0"):  # tf.data runs on the host; an eager GPU copy would bounce back
        images = tf.convert_to_tensor(images, tf.float32)
    if tuple(images.shape[1:]) != tuple(spec.image_shape):
        raise ValueError(f"images of shape {tuple(images.shape)} do not match {spec.name!r} "
                         f"examples of shape {spec.image_shape}")
    n = int(images.shape[0])
    if epoch is not None and (seed is None or repeat):
        raise ValueError("make_dataset(epoch=...) builds one reproducible epoch: it needs an "
                         f"integer seed and repeat=False, got seed={seed!r}, repeat={repeat!r}")
    # Shuffle and batch indices, then gather one batch at a time: the shuffle buffer holds
    # int64s instead of a second copy of every image. Either way this runs far faster than
    # training consumes (docs/PERFORMANCE.md).
    ds = tf.data.Dataset.range(n)
    if shuffle and epoch is not None:
        ds = tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=_epoch_seed(seed, epoch)))
    elif shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    noise = _NOISE.get(spec.binarization) if shuffle else None
    if noise and epoch is not None:
        pixel_seed = _epoch_seed(seed + _NOISE_SEED_OFFSET, epoch)
        ds = ds.enumerate().map(   # batch i of the epoch draws with seed fold_in(pixel_seed, i)
            lambda i, index: noise(tf.gather(images, index), tf.random.fold_in(pixel_seed, i)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    elif noise:
        noise_seed = None if seed is None else seed + _NOISE_SEED_OFFSET
        seeds = tf.data.Dataset.random(seed=noise_seed,
                                       rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda index, pair: noise(tf.gather(images, index), pair),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda index: tf.gather(images, index),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)
