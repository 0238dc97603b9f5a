"""Dermoscopy's own photometric variation, drawn on batches on the accelerator (`--aug-policy
dermoscopy`): uneven illumination, colour temperature, the dark circular vignette of contact
dermoscopes, hairs, and gel bubbles with their reflections. Images only: the masks pass through
untouched (a hair over a lesion is still lesion; the network must learn to see through it).

Why these: images of other clinics differ from ISIC's reference images mostly in their devices'
light, colour and artefacts, not in the lesions (Barata et al., "Improving dermoscopy image
classification using color constancy", IEEE JBHI 2015; Perez et al., "Data augmentation for skin
lesion analysis", ISIC workshop at MICCAI 2018, where colour and artefact-like changes helped most;
Bissoto et al., "(De)constructing bias on skin lesion datasets", CVPR workshops 2019, for dark
corners, hairs, gel bubbles and rulers as shortcuts that do not transfer). Each layer works on
float images in [0, 1] (what the train step feeds), in float32, seeded like the other layers.
"""

from __future__ import annotations

import keras
from keras import ops


class _ImageOnly(keras.layers.Layer):
    """A random photometric change of the "images" of {"images", "segmentation_masks"} batches
    (or of an image batch), applied to each image with probability `rate`, training only."""

    def __init__(self, rate=0.5, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, data, training=True):
        if not training:
            return data
        images = data["images"] if isinstance(data, dict) else data
        if images.shape[1] is None or images.shape[2] is None:
            raise ValueError(
                f"{self.name} draws on images of a known height and width; got shape {images.shape}"
            )
        images = ops.cast(images, "float32")
        changed = ops.clip(self.change(images), 0.0, 1.0)
        chosen = self.uniform((ops.shape(images)[0], 1, 1, 1)) < self.rate
        out = ops.where(chosen, changed, images)
        return {**data, "images": out} if isinstance(data, dict) else out

    def uniform(self, shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def coordinates(self, images):
        """(y, x) of each pixel, each (1, H, W), in [0, 1] across the image."""
        h, w = images.shape[1], images.shape[2]
        ys, xs = ops.meshgrid(ops.linspace(0.0, 1.0, h), ops.linspace(0.0, 1.0, w), indexing="ij")
        return ys[None], xs[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="skinseg")
class RandomIllumination(_ImageOnly):
    """Light falling off across the field: the image times 1 + g, g a linear ramp in a random
    direction reaching +-`strength` at the image's edges (an off-centre lamp, a tilted lens)."""

    def __init__(self, strength=0.25, rate=0.5, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.strength = strength

    def change(self, images):
        batch = ops.shape(images)[0]
        ys, xs = self.coordinates(images)
        gy, gx = (self.uniform((batch, 1, 1), -self.strength, self.strength) for _ in range(2))
        gain = 1.0 + gy * (2.0 * ys - 1.0) + gx * (2.0 * xs - 1.0)
        return images * gain[..., None]

    def get_config(self):
        return {**super().get_config(), "strength": self.strength}


@keras.saving.register_keras_serializable(package="skinseg")
class RandomColourTemperature(_ImageOnly):
    """Warmer or cooler light: red times 1 + t, blue times 1 - t, t in +-`shift` (halogen against
    LED dermoscopes; white balance left to the camera)."""

    def __init__(self, shift=0.12, rate=0.5, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.shift = shift

    def change(self, images):
        t = self.uniform((ops.shape(images)[0], 1, 1, 1), -self.shift, self.shift)
        gains = ops.concatenate([1.0 + t, ops.ones_like(t), 1.0 - t], axis=-1)
        return images * gains

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}


@keras.saving.register_keras_serializable(package="skinseg")
class RandomVignette(_ImageOnly):
    """The dark circle of a contact dermoscope's lens: outside a radius of `radius` (a range, in
    half-diagonals from a centre moved by up to 5 % of the image) the image darkens smoothly to
    `darkness` (a range) of its brightness."""

    def __init__(self, radius=(0.7, 1.0), darkness=(0.0, 0.3), rate=0.3, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.radius, self.darkness = tuple(radius), tuple(darkness)

    def change(self, images):
        batch = ops.shape(images)[0]
        ys, xs = self.coordinates(images)
        cy, cx = (0.5 + self.uniform((batch, 1, 1), -0.05, 0.05) for _ in range(2))
        # distances in half-diagonals of the image (a corner is 1 from the centre)
        d = ops.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2) / 0.5)
        radius = self.uniform((batch, 1, 1), *self.radius)
        floor = self.uniform((batch, 1, 1), *self.darkness)
        edge = ops.sigmoid((d - radius) / 0.03)  # a soft rim, about 3 % of the half-diagonal
        return images * (1.0 - (1.0 - floor) * edge)[..., None]

    def get_config(self):
        return {**super().get_config(), "radius": list(self.radius), "darkness": list(self.darkness)}


def _distance_to_polyline(ys, xs, points):
    """Distance of every pixel (ys, xs: (1, H, W)) to the polyline through `points` (B, K, 2),
    in the same units: (B, H, W)."""
    a, b = points[:, :-1, :], points[:, 1:, :]  # (B, K-1, 2) segments
    py, px = ys[:, None], xs[:, None]  # (1, 1, H, W)
    ay, ax = a[..., 0][..., None, None], a[..., 1][..., None, None]
    dy, dx = (b[..., 0] - a[..., 0])[..., None, None], (b[..., 1] - a[..., 1])[..., None, None]
    t = ops.clip(((py - ay) * dy + (px - ax) * dx) / ops.maximum(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
    return ops.sqrt(ops.min((py - ay - t * dy) ** 2 + (px - ax - t * dx) ** 2, axis=1))


@keras.saving.register_keras_serializable(package="skinseg")
class RandomHairs(_ImageOnly):
    """Dark hairs: up to `hairs` curves (quadratic Béziers between random points, each drawn with
    probability 1/2) of 0.5 to 1.5 pixels' half-width at 128 px (scaled with the image), blended
    over the image in a dark brown-to-black colour."""

    SAMPLES = 12  # points along each curve (11 straight pieces)

    def __init__(self, hairs=6, rate=0.4, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.hairs = hairs

    def change(self, images):
        batch, h = ops.shape(images)[0], images.shape[1]
        ys, xs = self.coordinates(images)
        s = ops.linspace(0.0, 1.0, self.SAMPLES)[None, :, None]
        pixel = 1.0 / max(h - 1, 1)
        out = images
        for _ in range(self.hairs):
            ends = self.uniform((batch, 3, 2), -0.1, 1.1)  # start, control point, end
            p0, p1, p2 = ends[:, 0:1], ends[:, 1:2], ends[:, 2:3]
            curve = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2  # (B, K, 2)
            width = self.uniform((batch, 1, 1), 0.5, 1.5) * pixel * (h / 128.0)
            drawn = ops.cast(self.uniform((batch, 1, 1)) < 0.5, "float32")
            alpha = drawn * ops.clip(1.0 - _distance_to_polyline(ys, xs, curve) / width, 0.0, 1.0)
            shade = self.uniform((batch, 1, 1, 1), 0.02, 0.2)
            colour = ops.concatenate([shade * 1.3, shade, shade * 0.8], axis=-1)  # dark brown
            out = out * (1.0 - alpha[..., None]) + colour * alpha[..., None]
        return out

    def get_config(self):
        return {**super().get_config(), "hairs": self.hairs}


@keras.saving.register_keras_serializable(package="skinseg")
class RandomBubbles(_ImageOnly):
    """Gel bubbles: up to `bubbles` circles (each drawn with probability 1/2, radius 2 to 12 % of
    the image) with a bright thin rim, a faint haze inside and a small specular highlight."""

    def __init__(self, bubbles=3, rate=0.3, seed=None, **kwargs):
        super().__init__(rate=rate, seed=seed, **kwargs)
        self.bubbles = bubbles

    def change(self, images):
        batch = ops.shape(images)[0]
        ys, xs = self.coordinates(images)
        out = images
        for _ in range(self.bubbles):
            cy, cx = (self.uniform((batch, 1, 1)) for _ in range(2))
            r = self.uniform((batch, 1, 1), 0.02, 0.12)
            drawn = ops.cast(self.uniform((batch, 1, 1)) < 0.5, "float32")
            d = ops.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
            rim = ops.exp(-(((d - r) / (0.15 * r + 0.004)) ** 2))
            inside = ops.sigmoid((r - d) / 0.004)
            spot = ops.exp(-(((ys - cy + 0.4 * r) ** 2 + (xs - cx + 0.4 * r) ** 2) / (0.15 * r) ** 2))
            light = drawn * ops.clip(0.6 * rim + 0.1 * inside + 0.8 * spot, 0.0, 1.0)
            out = out + light[..., None] * (1.0 - out)  # towards white
        return out

    def get_config(self):
        return {**super().get_config(), "bubbles": self.bubbles}


def dermoscopy_layers(seed: int) -> list:
    """The policy's photometric layers, in the order light meets them: the lamp (illumination,
    colour), the lens (vignette), what lies on the skin (hairs, bubbles)."""
    return [
        RandomIllumination(seed=seed, name="aug_illumination"),
        RandomColourTemperature(seed=seed + 1, name="aug_colour_temperature"),
        RandomVignette(seed=seed + 2, name="aug_vignette"),
        RandomHairs(seed=seed + 3, name="aug_hairs"),
        RandomBubbles(seed=seed + 4, name="aug_bubbles"),
    ]
