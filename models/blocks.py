"""Layers and small blocks shared by the architectures."""

from __future__ import annotations

import keras
from keras import layers, ops

# PyTorch's BatchNorm default (its momentum 0.1 is Keras' 0.9). Keras' 0.99 made validation lag
# several epochs behind training in short runs.
BN_MOMENTUM = 0.9


def conv_bn_act(x, filters, kernel_size, name, *, strides=1, dilation_rate=1, activation="relu"):
    """Conv (no bias: BatchNorm adds one) -> BatchNorm -> activation (None for none)."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def sigmoid_head(x, name="mask"):
    """1x1 conv to one logit, then a float32 sigmoid so mixed precision needs no special case."""
    logits = layers.Conv2D(1, 1, name="logits")(x)
    return layers.Activation("sigmoid", dtype="float32", name=name)(logits)


def set_bn_momentum(model: keras.Model, momentum: float = BN_MOMENTUM) -> None:
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum


@keras.saving.register_keras_serializable(package="skinseg")
class CaffePreprocess(layers.Layer):
    """`keras.applications.resnet50.preprocess_input` inside the graph, for images in [0, 1]:
    RGB -> BGR, x255, minus the ImageNet channel means. A saved model so carries its own
    normalisation."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, images):
        bgr = ops.flip(images, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(self.MEAN_BGR, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
