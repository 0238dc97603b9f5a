"""The UNet family (Ronneberger et al. 2015) with BatchNorm, as the reference built it: 3x3
convolutions with bias and reflection padding, BatchNorm epsilon 1e-5. One builder for every preset."""

from __future__ import annotations

import keras
from keras import layers

from skinseg.models.blocks import conv_bn_act, image_input, sigmoid_head


def level_filters(width: int, depth: int, max_filters: int | None) -> list[int]:
    """Filters at levels 0..depth (the last is the bottleneck): doubling, capped at `max_filters`.

    Uncapped, 96 filters over 6 levels reach 6144 channels at 2x2 pixels (1.12 billion
    parameters for almost no compute); the cap keeps the high-resolution geometry intact."""
    return [min(width * 2**level, max_filters or width * 2**level) for level in range(depth + 1)]


PADDINGS = ("reflect", "zeros")


def _double_conv(x, filters, name, padding):
    padding = "same" if padding == "zeros" else padding
    x = conv_bn_act(x, filters, 3, f"{name}_a", use_bias=True, padding=padding)
    return conv_bn_act(x, filters, 3, f"{name}_b", use_bias=True, padding=padding)


def build_unet(
    image_size: int | tuple[int, int] = 128,
    width: int = 64,
    depth: int = 4,
    max_filters: int | None = None,
    name: str = "unet",
    padding: str = "reflect",
) -> keras.Model:
    """Per level two Conv3x3-BN-ReLU; 2x2 max-pool down; 2x2 transposed conv up; skip concatenation.
    Inputs: RGB in [0, 1], of a size divisible by 2**depth (and at least 2 pixels at the bottom,
    for the reflection padding). `padding="zeros"` trains about 15 % faster on a CPU (reflection
    padding is built from cropping and concatenation, which copy every feature map once more)."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}; got {padding!r}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % 2**depth or w % 2**depth:
        raise ValueError(f"image size {h}x{w} is not divisible by 2**depth = {2**depth} (depth {depth})")
    if padding == "reflect" and min(h, w) // 2**depth < 2:
        raise ValueError(f"image size {h}x{w} is too small for {depth} levels (2x2 pixels at the bottom)")
    filters = level_filters(width, depth, max_filters)
    inputs = image_input(h, w)
    x = inputs
    skips = []
    for level in range(depth):
        x = _double_conv(x, filters[level], f"enc{level}", padding)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _double_conv(x, filters[depth], "bottleneck", padding)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters[level], 2, strides=2, name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level]])
        x = _double_conv(x, filters[level], f"dec{level}", padding)
    return keras.Model(inputs, sigmoid_head(x), name=name)
