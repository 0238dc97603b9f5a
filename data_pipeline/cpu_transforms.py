"""CPU-side albumentations transforms (run inside `tf.data` through `tf.numpy_function`)."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

import albumentations as A  # noqa: E402


@functools.lru_cache(maxsize=1)
def clahe_transform() -> A.CLAHE:
    """Deterministic CLAHE (fixed clip limit, unlike albumentations' random default), so it can
    run before the cache and identically at train, test and inference time, as the reference did."""
    return A.CLAHE(clip_limit=(2.0, 2.0), tile_grid_size=(8, 8), p=1.0)
