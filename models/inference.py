"""Load a saved segmenter and run it, optionally with flip test-time augmentation."""

from __future__ import annotations

import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

import models.blocks  # noqa: F401  (registers the custom layers before loading)


class ModelLoadError(RuntimeError):
    pass


def load_segmenter(path: str) -> keras.Model:
    """`keras.models.load_model`, with errors that name the file."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such model file (a run folder holds best.keras and last.keras)")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .keras model file (truncated or corrupt?)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many types for a bad archive
        raise ModelLoadError(f"{path}: cannot load the model ({type(err).__name__}: {err})") from None


def input_size(model: keras.Model) -> tuple[int, int]:
    return int(model.input_shape[1]), int(model.input_shape[2])


def _forward(model: keras.Model):
    """One traced inference function per model, for any batch size (no retracing per shape)."""
    fn = getattr(model, "_skinseg_forward", None)
    if fn is None:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        model._skinseg_forward = fn
    return fn


def predict_probabilities(model: keras.Model, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """(B, H, W) lesion probabilities for float images in [0, 1]. TTA averages the identity and
    the horizontal, vertical and double flips, each flipped back."""
    forward = _forward(model)
    flips = ((), (2,), (1,), (1, 2)) if tta else ((),)
    total = np.zeros(images.shape[:3], np.float32)
    for axes in flips:
        flipped = np.ascontiguousarray(np.flip(images, axes)) if axes else images
        pred = forward(tf.constant(flipped, tf.float32)).numpy()[..., 0]
        total += np.flip(pred, axes) if axes else pred
    return total / len(flips)
