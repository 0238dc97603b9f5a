"""Layers and small blocks shared by the architectures. Everything here is made of Keras' built-in
layers, so that a saved model loads in a process that has never imported this project."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

# PyTorch's BatchNorm defaults, as the reference used them (its momentum 0.1 is Keras' 0.9).
# Keras' own momentum 0.99 made validation lag several epochs behind training in short runs.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(x, name: str):
    """Synchronized across replicas: each step normalises with the statistics of the global batch,
    as one device would, so every replica (and every worker) keeps the same moving averages.
    (Unsynchronized, each would average only its own share, and the workers would end apart.)"""
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True, name=name)(
        x
    )


def reflect_pad1(x, name: str):
    """Reflection padding by one pixel (PyTorch's `padding_mode="reflect"`), from cropping and
    concatenation: row -1 is row 1 and row H is row H - 2, likewise for columns."""
    h, w = x.shape[1], x.shape[2]
    top = layers.Cropping2D(((1, h - 2), (0, 0)), name=f"{name}_top")(x)
    bottom = layers.Cropping2D(((h - 2, 1), (0, 0)), name=f"{name}_bottom")(x)
    x = layers.Concatenate(axis=1, name=f"{name}_rows")([top, x, bottom])
    left = layers.Cropping2D(((0, 0), (1, w - 2)), name=f"{name}_left")(x)
    right = layers.Cropping2D(((0, 0), (w - 2, 1)), name=f"{name}_right")(x)
    return layers.Concatenate(axis=2, name=f"{name}_cols")([left, x, right])


def conv_bn_act(
    x,
    filters,
    kernel_size,
    name,
    *,
    strides=1,
    dilation_rate=1,
    activation="relu",
    use_bias=False,
    padding="same",
):
    """Conv -> BatchNorm -> activation (None for none). `padding`: "same" (zeros) or "reflect"
    (3x3 kernels)."""
    if padding == "reflect":
        if kernel_size != 3 or strides != 1 or dilation_rate != 1:
            raise ValueError("reflect padding is implemented for plain 3x3 convolutions")
        x = reflect_pad1(x, f"{name}_pad")
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn")
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def _align_corners_matrix(source: int, target: int) -> np.ndarray:
    """(source, target) weights of 1-D linear interpolation with the end samples aligned
    (PyTorch's `align_corners=True`): output j reads input position j (source - 1) / (target - 1)."""
    matrix = np.zeros((source, target), "float32")
    for j in range(target):
        position = j * (source - 1) / (target - 1) if target > 1 else 0.0
        low = min(int(np.floor(position)), source - 1)
        high = min(low + 1, source - 1)
        matrix[low, j] += 1.0 - (position - low)
        matrix[high, j] += position - low
    return matrix


def resize_align_corners(x, size: tuple[int, int], name: str):
    """Bilinear resize with aligned corners, as the reference's `F.interpolate(...,
    align_corners=True)`, from built-in layers only (so a saved model loads without this
    project): two frozen bias-free Dense layers, one per axis, between Permutes. Keras'
    UpSampling2D and Resizing sample at half-pixel centres (PyTorch's align_corners=False)."""
    h, w = x.shape[1], x.shape[2]
    x = layers.Permute((3, 1, 2), name=f"{name}_chw")(x)  # (B, C, H, W): resize W
    width = layers.Dense(size[1], use_bias=False, trainable=False, name=f"{name}_w")
    x = width(x)
    x = layers.Permute((1, 3, 2), name=f"{name}_cwh")(x)  # (B, C, W', H): resize H
    height = layers.Dense(size[0], use_bias=False, trainable=False, name=f"{name}_h")
    x = height(x)
    width.set_weights([_align_corners_matrix(w, size[1])])
    height.set_weights([_align_corners_matrix(h, size[0])])
    return layers.Permute((3, 2, 1), name=f"{name}_hwc")(x)  # (B, H', W', C)


def sigmoid_head(x, name="mask"):
    """1x1 conv to one logit, then a float32 sigmoid so mixed precision needs no special case."""
    logits = layers.Conv2D(1, 1, name="logits")(x)
    return layers.Activation("sigmoid", dtype="float32", name=name)(logits)


def image_input(h: int, w: int):
    """The model's input: RGB in [0, 1], already preprocessed (see skinseg/data_pipeline/preprocess.py)."""
    return keras.Input((h, w, 3), name="image")
