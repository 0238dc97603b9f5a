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


@keras.saving.register_keras_serializable(package="skinseg")
class ShadesOfGray(layers.Layer):
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004; p = 6 as in Barata et al. 2015
    for dermoscopy): each image's illuminant is the Minkowski p-mean of each channel, and dividing
    it out maps a neutral illuminant to itself and a blue- or red-cast image to neutral. In the
    graph, so a saved model applies it to whatever it is given. Runs in float32."""

    def __init__(self, power: float = 6.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.power = power

    def call(self, images):
        x = ops.maximum(ops.cast(images, "float32"), 0.0)
        illuminant = ops.power(
            ops.mean(ops.power(x, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power
        )
        unit = illuminant / (ops.sqrt(ops.sum(illuminant**2, axis=-1, keepdims=True)) + 1e-6)
        return ops.clip(x / (unit * 3**0.5 + 1e-6), 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power}


def image_input(h: int, w: int, color_constancy: bool):
    """The model's input (RGB in [0, 1]) and the tensor the network starts from."""
    inputs = keras.Input((h, w, 3), name="image")
    x = ShadesOfGray(name="color_constancy")(inputs) if color_constancy else inputs
    return inputs, x
