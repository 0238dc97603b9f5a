"""The deterministic preprocessing every image gets before the network, at training, evaluation
and prediction time alike: resize to the model's input (stretched, or padded to keep the aspect
ratio), then optionally CLAHE and Shades-of-Gray colour constancy.

Both optional steps live outside the network on purpose: a saved `.keras` file then holds only
Keras' built-in layers and loads in any process (`keras.models.load_model(path)`), and the run's
`config.json` (or `preprocessing.json` beside an exported model) says which steps to apply.
Colour constancy is also written into the SavedModel and TFLite exports (`shades_of_gray_tf`),
which take raw images; CLAHE (OpenCV) cannot be, and `predict.py` applies it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass

import numpy as np

from skinseg.data_pipeline.image_io import FITS, resize_image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import

# Barata et al. 2015 found p = 6 best for dermoscopy.
SHADES_OF_GRAY_POWER = 6.0


@dataclass(frozen=True)
class Preprocessing:
    clahe: bool = False
    color_constancy: bool = False
    fit: str = "stretch"  # how an image meets the square input: image_io.content_box

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}; got {self.fit!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        """Older files have no `fit`: their models were trained on stretched images."""
        return cls(
            bool(data.get("clahe", False)),
            bool(data.get("color_constancy", False)),
            data.get("fit", "stretch"),
        )


@functools.lru_cache(maxsize=1)
def clahe_transform():
    """Deterministic CLAHE (fixed clip limit, unlike albumentations' random default), so it can
    run before the cache and identically at train, test and inference time, as the reference did."""
    import albumentations as A

    return A.CLAHE(clip_limit=(2.0, 2.0), tile_grid_size=(8, 8), p=1.0)


def shades_of_gray(image: np.ndarray, power: float = SHADES_OF_GRAY_POWER) -> np.ndarray:
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004) of one uint8 RGB image: the
    illuminant is the Minkowski p-mean of each channel, and dividing it out maps a neutral
    illuminant to itself and a blue- or red-cast image to neutral."""
    x = image.astype(np.float32) / 255.0
    illuminant = np.mean(x**power, axis=(0, 1)) ** (1.0 / power)
    unit = illuminant / (np.sqrt(np.sum(illuminant**2)) + 1e-6)
    corrected = np.clip(x / (unit * np.sqrt(3.0) + 1e-6), 0.0, 1.0)
    return np.rint(corrected * 255.0).astype(np.uint8)


def shades_of_gray_tf(images, power: float = SHADES_OF_GRAY_POWER):
    """The same on a float32 batch (B, H, W, 3) in [0, 1], in TensorFlow ops, for the exports.
    The result is rounded to 1/255 steps as the uint8 path is."""
    import tensorflow as tf

    x = tf.maximum(tf.cast(images, tf.float32), 0.0)
    x = tf.round(x * 255.0) / 255.0
    illuminant = tf.reduce_mean(x**power, axis=(1, 2), keepdims=True) ** (1.0 / power)
    unit = illuminant / (tf.sqrt(tf.reduce_sum(illuminant**2, axis=-1, keepdims=True)) + 1e-6)
    corrected = tf.clip_by_value(x / (unit * np.sqrt(3.0).astype(np.float32) + 1e-6), 0.0, 1.0)
    return tf.round(corrected * 255.0) / 255.0


def prepare_image(
    image: np.ndarray, size: tuple[int, int], spec: Preprocessing = Preprocessing()
) -> np.ndarray:
    """One decoded uint8 RGB image -> the uint8 model input: resize (stretched or padded, as
    `spec.fit` says), CLAHE, colour constancy."""
    image = resize_image(image, size, spec.fit)
    if spec.clahe:
        image = clahe_transform()(image=image)["image"]
    if spec.color_constancy:
        image = shades_of_gray(image)
    return image
