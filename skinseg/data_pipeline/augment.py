"""Augmentation on the accelerator: Keras 3 layers applied to batched
`{"images", "segmentation_masks"}` inside the compiled train step (see `training/trainer.py`).

Stock layers that transform image and mask jointly: RandomFlip, RandomRotation, RandomZoom,
RandomTranslation (masks use nearest-neighbour interpolation); colour layers leave masks alone.
Two gaps are filled here:
- `RandomTranspose`: with flips it covers every 90-degree rotation (the 8 symmetries of a square).
- `JointElasticTransform`: Keras 3's RandomElasticTransform draws a *different* random field for
  the mask than for the image when given a dict; concatenating the mask as a fourth channel makes
  one field warp both. The mask comes back bilinearly warped and is re-binarised at 0.5.
Nothing here is part of the saved inference model.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="skinseg")
class RandomTranspose(keras.layers.Layer):
    """Swap height and width of each sample with probability 0.5 (square inputs)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, data, training=True):
        if not training:
            return data
        images = data["images"] if isinstance(data, dict) else data
        swap = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator) < 0.5

        def transpose(x):
            return ops.where(swap, ops.transpose(x, (0, 2, 1, 3)), x)

        if not isinstance(data, dict):
            return transpose(data)
        return {
            key: transpose(value) if key in ("images", "segmentation_masks") else value
            for key, value in data.items()
        }

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="skinseg")
class JointElasticTransform(keras.layers.Layer):
    """Elastic deformation with one random field for image and mask, applied to each image with
    probability `rate`. (Keras' `factor=p` draws each image's probability from U(0, p), which
    warps about p/2 of the images; `(p, p)` makes it p.)"""

    def __init__(self, rate=0.3, scale=(0.5, 1.0), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.scale, self.seed = rate, scale, seed
        self.elastic = keras.layers.RandomElasticTransform(
            factor=(rate, rate), scale=scale, fill_mode="reflect", value_range=(0.0, 1.0), seed=seed
        )

    def call(self, data, training=True):
        if not training:
            return data
        images, masks = data["images"], data["segmentation_masks"]
        channels = ops.shape(images)[-1]
        both = self.elastic(ops.concatenate([images, ops.cast(masks, images.dtype)], -1), training=True)
        warped_masks = ops.cast(both[..., channels:] > 0.5, masks.dtype)
        return {**data, "images": both[..., :channels], "segmentation_masks": warped_masks}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "scale": self.scale,
            "seed": self.seed,
        }


# --aug-policy: keyword arguments of build_augmenter. "strong" aims at other cameras and clinics:
# lesions have no preferred orientation or size, and colour, saturation and focus vary by device.
POLICIES: dict[str, dict] = {
    "default": {},
    "strong": {
        "rotation": 0.5,
        "zoom": 0.25,
        "translation": 0.1,
        "brightness": 0.2,
        "contrast": 0.3,
        "hue": 0.05,
        "saturation": 0.3,
    },
}


def build_augmenter(
    seed: int = 0,
    *,
    flips: bool = True,
    rotate90: bool = True,
    rotation: float = 0.05,
    zoom: float = 0.1,
    translation: float = 0.05,
    elastic: float = 0.0,
    brightness: float = 0.1,
    contrast: float = 0.1,
    hue: float = 0.02,
    saturation: float = 0.0,
) -> keras.layers.Pipeline:
    """The `--aug` policy: geometric transforms (joint) then colour transforms (images only).
    Each layer gets its own seed derived from `seed`. Rotation is a fraction of a full turn;
    `elastic` is the probability of an elastic warp per image; `saturation` the largest change
    either way (0.3: Keras' factor in [0.2, 0.8], 0.5 being no change; a saturation multiplier of
    x0.25 to x4). (Keras' RandomSharpness is left out: its blur pads with zeros, which draws a
    frame one pixel wide into every image.) Elastic is off by default: Keras
    computes the field for every image of the batch, which alone costs more than all the other
    layers together on a CPU (measured 50 ms vs 35 ms per batch of 8 at 128 px)."""
    layers = []
    if flips:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed, name="aug_flip"))
    if rotate90:
        layers.append(RandomTranspose(seed=seed + 1, name="aug_transpose"))
    if rotation:
        layers.append(
            keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 2, name="aug_rotation")
        )
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect", seed=seed + 3, name="aug_zoom"))
    if translation:
        layers.append(
            keras.layers.RandomTranslation(
                translation, translation, fill_mode="reflect", seed=seed + 4, name="aug_translation"
            )
        )
    if elastic:
        layers.append(JointElasticTransform(rate=elastic, seed=seed + 5, name="aug_elastic"))
    if brightness:
        layers.append(
            keras.layers.RandomBrightness(
                brightness, value_range=(0.0, 1.0), seed=seed + 6, name="aug_brightness"
            )
        )
    if contrast:
        layers.append(
            keras.layers.RandomContrast(contrast, value_range=(0.0, 1.0), seed=seed + 7, name="aug_contrast")
        )
    if hue:
        layers.append(keras.layers.RandomHue(hue, value_range=(0.0, 1.0), seed=seed + 8, name="aug_hue"))
    if saturation:
        if not 0 < saturation <= 0.5:
            raise ValueError(f"saturation must be in (0, 0.5]; got {saturation}")
        # Keras' factor 0.5 is "no change": a range of +-saturation about it
        layers.append(
            keras.layers.RandomSaturation(
                (0.5 - saturation, 0.5 + saturation),
                value_range=(0.0, 1.0),
                seed=seed + 9,
                name="aug_saturation",
            )
        )
    return keras.layers.Pipeline(layers, name="augmenter")
