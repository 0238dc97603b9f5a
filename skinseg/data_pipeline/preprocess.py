"""The deterministic preprocessing every image gets before the network, at training, evaluation
and prediction time alike: resize to the model's input (stretched, or padded to keep the aspect
ratio), then optionally CLAHE and Shades-of-Gray colour constancy.

Both optional steps live outside the network on purpose: a saved `.keras` file then holds only
Keras' built-in layers and loads in any process (`keras.models.load_model(path)`), and
`preprocessing.json` beside it (in a run folder, beside the shipped model, beside an export) says
which steps to apply; the Segmenter (inference/segmenter.py) applies them. Colour constancy is
also written into the SavedModel and TFLite exports (`shades_of_gray_tf`), which take raw images;
CLAHE (OpenCV) cannot be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from skinseg.data_pipeline.image_io import FITS, resize_image

# Barata et al. 2015 found p = 6 best for dermoscopy.
SHADES_OF_GRAY_POWER = 6.0


@dataclass(frozen=True)
class Preprocessing:
    clahe: bool = False
    color_constancy: bool = False
    fit: str = "stretch"  # how an image meets the square input: image_io.content_box
    clahe_clip: float = 2.0  # CLAHE's clip limit (files of version 0.2 have none: 2.0)

    def __post_init__(self):
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}; got {self.fit!r}")
        if not 0 < self.clahe_clip < float("inf"):
            raise ValueError(f"clahe_clip must be a positive number; got {self.clahe_clip!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        """Typed: a flag must be true or false (the string "false" is refused, not read as true),
        `fit` one of FITS. A missing key takes its default (files of version 0.1 have no `fit`:
        their models were trained on stretched images). An export's preprocessing.json also
        carries `input`, `output` and `notes` for people; any other key is refused."""
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object: {data!r}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)} - EXPORT_NOTES)
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join(unknown)} (known: clahe, clahe_clip, color_constancy, fit)"
            )
        for key in ("clahe", "color_constancy"):
            if not isinstance(data.get(key, False), bool):
                raise ValueError(f"{key} must be true or false, not {data[key]!r}")
        fit = data.get("fit", "stretch")
        if fit not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
        clip = data.get("clahe_clip", 2.0)
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < float("inf"):
            raise ValueError(f"clahe_clip must be a positive number, not {clip!r}")
        return cls(data.get("clahe", False), data.get("color_constancy", False), fit, float(clip))


# Keys an export's preprocessing.json adds for its reader (inference/export.py).
EXPORT_NOTES = frozenset({"input", "output", "notes"})


CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


def clahe(image: np.ndarray, clip_limit: float = CLAHE_CLIP_LIMIT) -> np.ndarray:
    """CLAHE on the lightness of one uint8 RGB image (RGB -> LAB, L equalised in 8x8 tiles, back
    to RGB), as albumentations' CLAHE does (tested equal to it, pixel for pixel). A fixed clip
    limit (albumentations draws one per call) so that it can run before the cache and identically
    at train, test and inference time."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    # createCLAHE objects are not thread-safe; one per call costs microseconds.
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=CLAHE_TILES).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


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
    import tensorflow as tf  # only the exports need it; the data tools use this module without it

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
        image = clahe(image, spec.clahe_clip)
    if spec.color_constancy:
        image = shades_of_gray(image)
    return image
