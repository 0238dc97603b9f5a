"""The UNet family (Ronneberger et al. 2015) with BatchNorm: one builder for every preset."""

from __future__ import annotations

import keras
from keras import layers

from models.blocks import conv_bn_act, image_input, sigmoid_head


def level_filters(width: int, depth: int, max_filters: int | None) -> list[int]:
    """Filters at levels 0..depth (the last is the bottleneck): doubling, capped at `max_filters`.

    Uncapped, 96 filters over 6 levels reach 6144 channels at 2x2 pixels (1.12 billion
    parameters for almost no compute); the cap keeps the high-resolution geometry intact."""
    return [min(width * 2**level, max_filters or width * 2**level) for level in range(depth + 1)]


def build_unet(
    image_size: int | tuple[int, int] = 128,
    width: int = 64,
    depth: int = 4,
    max_filters: int | None = 1024,
    name: str = "unet",
    color_constancy: bool = False,
) -> keras.Model:
    """Per level two Conv3x3-BN-ReLU; 2x2 max-pool down; 2x2 transposed conv up; skip concatenation.
    Inputs: RGB in [0, 1], of a size divisible by 2**depth."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % 2**depth or w % 2**depth:
        raise ValueError(f"image size {h}x{w} is not divisible by 2**depth = {2**depth} (depth {depth})")
    filters = level_filters(width, depth, max_filters)
    inputs, x = image_input(h, w, color_constancy)
    skips = []
    for level in range(depth):
        x = conv_bn_act(x, filters[level], 3, f"enc{level}_a")
        x = conv_bn_act(x, filters[level], 3, f"enc{level}_b")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = conv_bn_act(x, filters[depth], 3, "bottleneck_a")
    x = conv_bn_act(x, filters[depth], 3, "bottleneck_b")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters[level], 2, strides=2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = conv_bn_act(x, filters[level], 3, f"dec{level}_a")
        x = conv_bn_act(x, filters[level], 3, f"dec{level}_b")
    return keras.Model(inputs, sigmoid_head(x), name=name)
