"""Assemble the `tf.data` pipeline: decode -> preprocess -> cache -> shuffle -> batch -> prefetch.

The deterministic part (decode, resize, CLAHE, colour constancy) runs once and is cached as uint8; everything random
happens later, on batches, inside the compiled train step (see `augment.py`). Elements are
(images float32 in [0, 1] of shape (B, H, W, 3), masks float32 {0, 1} of shape (B, H, W, 1)).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from skinseg.data_pipeline.discovery import Pair
from skinseg.data_pipeline.image_io import read_image, read_mask, resize_mask
from skinseg.data_pipeline.preprocess import Preprocessing, clahe, prepare_image, shades_of_gray

_AUTO_MEMORY_SHARE = 0.25  # cache in RAM while the decoded set takes under this share of it
SHUFFLE_BUFFER_BYTES = 256 * 2**20  # decoded examples held for shuffling without a memory cache


def as_hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def load_example(
    image_path: str, mask_path: str, size, spec: Preprocessing = Preprocessing()
) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic part for one pair: uint8 image (H, W, 3) and uint8 {0, 1} mask (H, W, 1),
    the mask resampled with the image's own geometry."""
    hw = as_hw(size)
    decoded = read_image(image_path, min_size=hw)
    image = prepare_image(decoded.array, hw, spec)
    mask = resize_mask(read_mask(mask_path).array, hw, decoded.covers, spec.fit)
    return image, mask.astype(np.uint8)[:, :, None]


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_cache(mode: str, n_examples: int, size) -> str:
    """`auto` -> `memory` when the decoded uint8 set fits comfortably in RAM, else `disk`."""
    if mode != "auto":
        return mode
    h, w = as_hw(size)
    needed = n_examples * h * w * 4
    return "memory" if needed < _AUTO_MEMORY_SHARE * available_memory() else "disk"


def make_dataset(
    pairs: list[Pair],
    size,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    cache: str = "memory",
    cache_dir: str | None = None,
    preprocessing: Preprocessing = Preprocessing(),
    pack: bool = False,
    clahe_clip_range: tuple[float, float] | None = None,
) -> tf.data.Dataset:
    """Batched (images, masks), or one (images ‖ masks) tensor with `pack`. Training sets are
    shuffled (seeded), drop their last partial batch (static shapes, no one-image BatchNorm
    batches) and repeat, so an epoch is `steps_per_epoch(...)` batches and a resumed run can
    `skip` exactly the batches already seen. Pass k's order depends on (seed, k) alone, the
    same for every iterator of the dataset and on every worker.

    Memory: `cache="memory"` holds the decoded set and shuffles all of it. With `"disk"` or
    `"none"` memory stays bounded whatever the set's size: the file order is shuffled before
    decoding (cheap: paths), and decoded examples pass through a shuffle buffer of at most
    SHUFFLE_BUFFER_BYTES (the disk cache keeps one seeded file order, the buffer mixes it anew
    each epoch).

    `clahe_clip_range` (training, `--aug-policy reference`): CLAHE after the cache, each example
    each epoch with a clip limit drawn from U(low, high) (seeded), as albumentations' CLAHE drew
    it per call in the reference's loader; OpenCV runs it, on the CPU, in the input pipeline. The
    cache then holds the images before CLAHE and colour constancy, and both run after it in
    prepare_image's order (CLAHE first)."""
    if not pairs:
        raise ValueError("make_dataset needs at least one pair")
    if clahe_clip_range is not None and not training:
        raise ValueError("clahe_clip_range draws a clip limit per example: training sets only")
    hw = as_hw(size)
    cache = resolve_cache(cache, len(pairs), hw)

    cached = (
        dataclasses.replace(preprocessing, clahe=False, color_constancy=False)
        if clahe_clip_range is not None
        else preprocessing
    )

    def load(image_path, mask_path):
        return load_example(os.fsdecode(image_path), os.fsdecode(mask_path), hw, cached)

    def decode(image_path, mask_path):
        image, mask = tf.numpy_function(load, [image_path, mask_path], (tf.uint8, tf.uint8))
        image.set_shape((*hw, 3))
        mask.set_shape((*hw, 1))
        return image, mask

    # Paths travel as bytes: a file name that is not valid UTF-8 still names its file.
    paths = tf.data.Dataset.from_tensor_slices(
        ([os.fsencode(p.image) for p in pairs], [os.fsencode(p.mask) for p in pairs])
    )

    def decoded(ds):
        return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    # The file order is shuffled with a seed of its own: with the buffer shuffle's seed and a buffer
    # that holds the whole set, both would draw the same permutation P and a pass would be P twice
    # over (squares of permutations are not all orders: of 3 images, 3 orders of 6 came about).
    path_seed = seed + 7919
    if training and cache == "disk":
        paths = paths.shuffle(len(pairs), seed=path_seed, reshuffle_each_iteration=False)  # the cache's order
    if cache == "memory":
        stored = decoded(paths).cache()
    elif cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs a cache_dir")
        os.makedirs(cache_dir, exist_ok=True)
        # One file per process: a killed run leaves a lockfile that would block a reused name.
        stored = decoded(paths).cache(
            os.path.join(cache_dir, f"{'train' if training else 'eval'}-{os.getpid()}")
        )
    else:
        stored = None  # decoded anew each pass
    if not training:
        ds = (decoded(paths) if stored is None else stored).batch(batch_size)
    else:
        example_bytes = hw[0] * hw[1] * 4
        buffer = (
            len(pairs)
            if cache == "memory"
            else max(1, min(len(pairs), SHUFFLE_BUFFER_BYTES // example_bytes))
        )
        drop = len(pairs) >= batch_size

        def passes(_):
            """Every pass over the set, the order of each reshuffled (seeded)."""
            source = stored
            if source is None:
                source = decoded(paths.shuffle(len(pairs), seed=path_seed, reshuffle_each_iteration=True))
            ds = source.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            if clahe_clip_range is not None:
                # Each example is paired with a draw of a seeded random stream, so the map may run in
                # parallel and still give every run the same clips (the stream restarts each pass).
                ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))
                ds = ds.map(
                    _random_clahe(clahe_clip_range, hw, preprocessing.color_constancy),
                    num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True,
                )
            return ds.batch(batch_size, drop_remainder=drop).repeat()

        # Built inside a function that each iterator runs anew: `reshuffle_each_iteration` draws
        # each pass's order from one generator per dataset object, which every iterator of it
        # advances. Under any strategy but the default, Keras' fit takes one batch from an
        # iterator it then drops (`_maybe_symbolic_build`), and that iterator's prefetch used up
        # as many orders as it ran ahead: the real one started at pass 2, 3, ..., a different
        # one on each worker at times, and the halves of a global batch came from different
        # passes (an image twice in an epoch, another never). Here every iterator has its own
        # generator: pass k is the same on every iterator, worker and resume. The cache is made
        # outside, so it is shared; the cardinality is restated, or tf.distribute would treat the
        # stream as possibly finite (an optional and a collective each step, batch shape None).
        ds = tf.data.Dataset.range(1).flat_map(passes)
        ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    ds = ds.map(_to_float_packed if pack else _to_float, num_parallel_calls=tf.data.AUTOTUNE)
    # Under a multi-worker strategy each worker keeps its share of every global batch (the
    # elements have no files to shard by); the same seed gives every worker the same order.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_examples: int, batch_size: int, training: bool = True) -> int:
    if training and n_examples >= batch_size:
        return n_examples // batch_size
    return -(-n_examples // batch_size)


def _to_float(images, masks):
    return tf.cast(images, tf.float32) / 255.0, tf.cast(masks, tf.float32)


def _to_float_packed(images, masks):
    """One tensor, images then masks on the channel axis (see training.trainer)."""
    images, masks = _to_float(images, masks)
    return tf.concat([images, masks], axis=-1)


def _random_clahe(clip_range: tuple[float, float], hw, color_constancy: bool):
    """A map function over ((image, mask), draw): CLAHE on the image with a clip limit from
    U(clip_range) decided by the draw, then colour constancy if the run uses it."""
    low, high = clip_range

    def apply(image, clip):
        image = clahe(image, float(clip))
        return shades_of_gray(image) if color_constancy else image

    def mapped(example, draw):
        image, mask = example
        unit = tf.random.stateless_uniform((), seed=tf.stack([draw, tf.constant(0, tf.int64)]))
        image = tf.numpy_function(apply, [image, low + (high - low) * unit], tf.uint8)
        image.set_shape((*hw, 3))
        return image, mask

    return mapped
