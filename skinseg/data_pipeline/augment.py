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
import numpy as np
from keras import ops

from skinseg.data_pipeline.artifacts import dermoscopy_layers


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


def _reflect_index(index, size: int, edge: bool):
    """Indices folded back into [0, size): mirrored about the edge pixel (OpenCV's
    BORDER_REFLECT_101, `edge=False`) or about the border itself (BORDER_REFLECT, `edge=True`)."""
    if size == 1:
        return ops.zeros_like(index)
    period = 2 * size if edge else 2 * (size - 1)
    index = ops.mod(index, period)
    return ops.where(index >= size, period - index - (1 if edge else 0), index)


def _sample(images, ys, xs, *, nearest: bool, edge: bool):
    """images (B, H, W, C) read at float pixel coordinates ys, xs (B, H, W): bilinear, or the
    nearest pixel (masks); outside the image, reflected (see _reflect_index)."""
    h, w, c = images.shape[1], images.shape[2], images.shape[3]
    flat = ops.reshape(images, (-1, h * w, c))

    def gather(y, x):
        y = _reflect_index(ops.cast(y, "int32"), h, edge)
        x = _reflect_index(ops.cast(x, "int32"), w, edge)
        index = ops.reshape(y * w + x, (-1, h * w, 1))
        return ops.reshape(ops.take_along_axis(flat, ops.tile(index, (1, 1, c)), axis=1), (-1, h, w, c))

    if nearest:
        return gather(ops.floor(ys + 0.5), ops.floor(xs + 0.5))
    y0, x0 = ops.floor(ys), ops.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]
    top = gather(y0, x0) * (1 - wx) + gather(y0, x0 + 1) * wx
    bottom = gather(y0 + 1, x0) * (1 - wx) + gather(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def _warp(data, ys, xs, *, edge: bool):
    """Image bilinearly, mask by its nearest pixel, both read at the same coordinates."""
    images = _sample(data["images"], ys, xs, nearest=False, edge=edge)
    masks = data["segmentation_masks"]
    warped = _sample(ops.cast(masks, images.dtype), ys, xs, nearest=True, edge=edge)
    return {**data, "images": images, "segmentation_masks": ops.cast(warped, masks.dtype)}


def _grid(images):
    h, w = images.shape[1], images.shape[2]
    ys, xs = ops.meshgrid(ops.arange(h, dtype="float32"), ops.arange(w, dtype="float32"), indexing="ij")
    return ys[None], xs[None]


class _JointLayer(keras.layers.Layer):
    """A random transform of {"images", "segmentation_masks"} batches, seeded, training only."""

    def __init__(self, seed=None, **kwargs):
        # float32 whatever the global policy: under mixed_float16 the sampling weights and the
        # coordinates must not meet half-precision images (and 1/8-pixel steps need float32).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, data, training=True):
        return self.transform(data) if training else data

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="skinseg")
class RandomRotate90(_JointLayer):
    """albumentations' RandomRotate90(p=1): each sample turned by 0, 90, 180 or 270 degrees, the
    four rotations only (no mirror images); square inputs."""

    def transform(self, data):
        images = data["images"]
        turns = keras.random.randint((ops.shape(images)[0], 1, 1, 1), 0, 4, seed=self.seed_generator)

        def rotate(x):
            quarter = ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=1)  # 90 degrees counter-clockwise
            half = ops.flip(ops.flip(x, axis=1), axis=2)
            three = ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=2)
            out = ops.where(turns == 1, quarter, x)
            out = ops.where(turns == 2, half, out)
            return ops.where(turns == 3, three, out)

        return {**data, "images": rotate(images), "segmentation_masks": rotate(data["segmentation_masks"])}


def _gaussian_kernel(sigma: float, size: int):
    """scipy.ndimage.gaussian_filter's kernel (truncate 4.0): 2 * int(4 sigma + 0.5) + 1 taps,
    truncated to what an image of `size` pixels can reflect once (scipy reflects again on
    images smaller than the kernel; only those differ)."""
    radius = min(int(4 * sigma + 0.5), size)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype("float32"), radius


@keras.saving.register_keras_serializable(package="skinseg")
class ReferenceElastic(_JointLayer):
    """albumentations 0.5.2's ElasticTransform, the reference's (alpha 120, sigma 6, alpha_affine
    3.6, p=1): a random affine map moving three points by up to +-alpha_affine pixels, then a
    displacement field of alpha x (uniform noise in [-1, 1] blurred by a Gaussian of sigma pixels),
    in pixels, each image its own field (the noise blurred as scipy's gaussian_filter does,
    truncated at 4 sigma, the edge pixel repeated); image bilinear, mask nearest, one field for
    both, the image's borders reflected about the edge pixel (cv2.remap's BORDER_REFLECT_101). The two resamplings of albumentations are
    one here (the affine map applied to the displaced coordinates), which blurs less and differs
    only within a few pixels of the border."""

    def __init__(self, alpha=120.0, sigma=6.0, alpha_affine=3.6, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.alpha, self.sigma, self.alpha_affine = alpha, sigma, alpha_affine

    def field(self, batch: int, h: int, w: int):
        """(dy, dx), each (B, H, W), in pixels."""
        noise = keras.random.uniform((batch, h, w, 2), -1.0, 1.0, seed=self.seed_generator)
        kernel, radius = _gaussian_kernel(self.sigma, min(h, w))
        # albumentations 0.5.2 blurs with scipy.ndimage.gaussian_filter, mode "reflect": the edge
        # pixel repeated (numpy's and ops.pad's "symmetric").
        padded = ops.pad(noise, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="symmetric")
        column = ops.convert_to_tensor(np.tile(kernel[:, None, None, None], (1, 1, 2, 1)))
        row = ops.convert_to_tensor(np.tile(kernel[None, :, None, None], (1, 1, 2, 1)))
        blurred = ops.depthwise_conv(
            ops.depthwise_conv(padded, column, padding="valid"), row, padding="valid"
        )
        return blurred[..., 0] * self.alpha, blurred[..., 1] * self.alpha

    def affine(self, batch: int, h: int, w: int):
        """(B, 2, 3): the inverse of the random affine map, (y, x) <- (y, x, 1)."""
        centre, square = np.array([h // 2, w // 2], "float32"), min(h, w) // 3
        points = np.array([centre + square, [centre[0] + square, centre[1] - square], centre - square])
        moved = ops.convert_to_tensor(points[None]) + keras.random.uniform(
            (batch, 3, 2), -self.alpha_affine, self.alpha_affine, seed=self.seed_generator
        )
        # Solve for the map taking the moved points back to the original ones (the inverse warp).
        ones = ops.ones((batch, 3, 1))
        solution = ops.solve(
            ops.concatenate([moved, ones], -1), ops.tile(ops.convert_to_tensor(points[None]), (batch, 1, 1))
        )
        return ops.transpose(solution, (0, 2, 1))

    def transform(self, data):
        images = data["images"]
        batch, h, w = ops.shape(images)[0], images.shape[1], images.shape[2]
        dy, dx = self.field(batch, h, w)
        ys, xs = _grid(images)
        ys, xs = ys + dy, xs + dx
        inverse = self.affine(batch, h, w)[:, :, None, None, :]  # (B, 2, 1, 1, 3)
        src_y = inverse[:, 0, ..., 0] * ys + inverse[:, 0, ..., 1] * xs + inverse[:, 0, ..., 2]
        src_x = inverse[:, 1, ..., 0] * ys + inverse[:, 1, ..., 1] * xs + inverse[:, 1, ..., 2]
        return _warp(data, src_y, src_x, edge=False)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "sigma": self.sigma,
            "alpha_affine": self.alpha_affine,
        }


@keras.saving.register_keras_serializable(package="skinseg")
class ShiftScaleRotate(_JointLayer):
    """albumentations' ShiftScaleRotate as the reference set it (p=0.5, scale +-10 %, rotation
    +-10 degrees, no shift, BORDER_REFLECT): OpenCV's rotation matrix about (w/2, h/2)."""

    def __init__(self, scale=0.1, rotate=10.0, rate=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.scale, self.rotate, self.rate = scale, rotate, rate

    def transform(self, data):
        images = data["images"]
        batch, h, w = ops.shape(images)[0], images.shape[1], images.shape[2]
        angle = keras.random.uniform((batch, 1, 1), -self.rotate, self.rotate, seed=self.seed_generator)
        scale = keras.random.uniform((batch, 1, 1), 1 - self.scale, 1 + self.scale, seed=self.seed_generator)
        apply = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < self.rate
        theta = angle * (np.pi / 180.0)
        cos, sin = ops.cos(theta) / scale, ops.sin(theta) / scale
        cy, cx = h / 2.0, w / 2.0
        ys, xs = _grid(images)
        # cv2.getRotationMatrix2D turns counter-clockwise on screen; this is its inverse.
        src_x = cos * (xs - cx) - sin * (ys - cy) + cx
        src_y = sin * (xs - cx) + cos * (ys - cy) + cy
        warped = _warp(data, src_y, src_x, edge=True)
        return {
            **data,
            "images": ops.where(apply, warped["images"], images),
            "segmentation_masks": ops.where(apply, warped["segmentation_masks"], data["segmentation_masks"]),
        }

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "rotate": self.rotate, "rate": self.rate}


def reference_augmenter(seed: int = 0) -> keras.layers.Pipeline:
    """`--aug-policy reference`: the reference's geometric augmentation (augmentation.ipynb, best,
    best2), in its order; its CLAHE (clip drawn from U(1, 4) per image) runs in the input pipeline
    (tfdata.make_dataset, `clahe_clip_range`)."""
    return keras.layers.Pipeline(
        [
            RandomRotate90(seed=seed, name="aug_rotate90"),
            ReferenceElastic(seed=seed + 1, name="aug_reference_elastic"),
            ShiftScaleRotate(seed=seed + 2, name="aug_shift_scale_rotate"),
        ],
        name="augmenter",
    )


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
    # the default policy plus dermoscopy's own light, colour and artefacts (data_pipeline.artifacts)
    "dermoscopy": {"dermoscopy": True},
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
    dermoscopy: bool = False,
) -> keras.layers.Pipeline:
    """The `--aug` policy: geometric transforms (joint) then colour transforms (images only);
    `dermoscopy` adds data_pipeline.artifacts' layers between them.
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
    if dermoscopy:  # the lamp, the lens and the skin's surface, before the camera's own changes
        layers += dermoscopy_layers(seed + 10)
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
