"""DeepLabV3+ (Chen et al. 2018) as the reference built it: a complete ResNet (101 by default, or
50) whose last stage is dilated instead of strided (output stride 16, multi-grid rates 2/4/8 as in
DeepLabV3), 2048 channels into ASPP (1x1, 3x3 at rates 6/12/18, image pooling; 256 filters), and a
decoder fed by the first stage's output (stride 4, 256 channels, projected to 48).

The backbone is Keras' own ResNet (`keras.applications`), cloned with its last stage's strides
and dilations changed, so ImageNet weights load unchanged. Two differences from a PyTorch
(torchvision-style) ResNet remain, both inherited from Keras: the stride of each downsampling
block sits on its first 1x1 convolution rather than on the 3x3 one, and the convolutions carry
biases (ResNet-101: 42.66 M parameters here against torchvision's 42.50 M).

As the reference's models/deeplab_resnet.py: no dropout anywhere; RGB in [0, 1] into the ResNet
when it trains from scratch (Keras' caffe preprocessing only with ImageNet weights, which expect
it); every bilinear resize with aligned corners (`F.interpolate(..., align_corners=True)`), built
from frozen Dense layers (`blocks.resize_align_corners`), not Keras' half-pixel UpSampling2D.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
from keras import layers

from skinseg.core.errors import SkinsegError
from skinseg.models.blocks import BN_MOMENTUM, conv_bn_act, image_input, resize_align_corners

BACKBONES = {
    "resnet50": ("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet101": ("ResNet101", "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}
LOW_LEVEL = "conv2_block3_out"  # the first stage's output: stride 4, 256 channels
MULTI_GRID = (1, 2, 4)  # DeepLabV3's unit rates in the dilated stage, times its rate 2
ASPP_RATES = (6, 12, 18)  # at output stride 16
# keras.applications' ResNet preprocessing ("caffe"): RGB -> BGR, x255, minus the ImageNet means.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)


class BackboneWeightsError(SkinsegError, RuntimeError):
    """Pretrained weights that cannot be had; the message says how to pass a local file."""


def _stock_resnet(backbone: str, image_size: tuple[int, int], weights: str | None) -> keras.Model:
    """keras.applications' ResNet, weights loaded: "imagenet" (downloaded once into
    ~/.keras/models), None, or a path to the Keras no-top weights file."""
    constructor, filename = BACKBONES[backbone]
    if weights not in (None, "none", "imagenet") and not os.path.isfile(weights):
        raise BackboneWeightsError(f"{weights}: backbone weights file not found")
    source = None if weights in (None, "none") else weights
    try:
        return getattr(keras.applications, constructor)(
            include_top=False, weights=source, input_shape=(*image_size, 3)
        )
    except Exception as err:
        if source != "imagenet":
            raise BackboneWeightsError(
                f"{weights}: not loadable as {constructor} no-top weights ({err})"
            ) from None
        raise BackboneWeightsError(
            f"ImageNet {constructor} weights could not be downloaded ({type(err).__name__}: {err}). "
            f"On a machine without network access, copy {filename} into ~/.keras/models/ "
            f"or pass its path: --backbone-weights /path/to/{filename}; or train from scratch "
            "with --backbone-weights none"
        ) from None


def _dilate_last_stage(layer: keras.layers.Layer) -> keras.layers.Layer:
    """`clone_model` hook: stride 1 and atrous 3x3 convolutions in stage 5; PyTorch's BatchNorm
    momentum, synchronized across replicas, everywhere."""
    config = layer.get_config()
    if isinstance(layer, layers.BatchNormalization):
        config["momentum"] = BN_MOMENTUM
        config["synchronized"] = True  # see models.blocks.batch_norm
    if layer.name in ("conv5_block1_0_conv", "conv5_block1_1_conv"):
        config["strides"] = (1, 1)
    unit = re.fullmatch(r"conv5_block(\d+)_2_conv", layer.name)
    if unit:
        config["dilation_rate"] = 2 * MULTI_GRID[(int(unit.group(1)) - 1) % len(MULTI_GRID)]
    return layer.__class__.from_config(config)


def dilated_resnet(backbone: str, image_size: tuple[int, int], weights: str | None) -> keras.Model:
    """The whole ResNet at output stride 16, emitting (stride-4 features, stride-16 features)."""
    stock = _stock_resnet(backbone, image_size, weights)
    dilated = keras.models.clone_model(stock, clone_function=_dilate_last_stage)
    dilated.set_weights(stock.get_weights())
    return keras.Model(dilated.input, [dilated.get_layer(LOW_LEVEL).output, dilated.output], name=backbone)


def caffe_preprocess(x):
    """`keras.applications.resnet.preprocess_input` for images in [0, 1], as one frozen 1x1
    convolution (a built-in layer, so the saved model needs no custom code)."""
    layer = layers.Conv2D(3, 1, trainable=False, name="resnet_preprocess")
    out = layer(x)
    swap = np.eye(3, dtype="float32")[::-1] * 255.0  # RGB -> BGR, scaled
    layer.set_weights([swap[None, None], -np.array(IMAGENET_MEAN_BGR, "float32")])
    return out


def aspp(x, filters: int, rates=ASPP_RATES):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, and image pooling branches."""
    h, w = x.shape[1], x.shape[2]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = conv_bn_act(pooled, filters, 1, "aspp_pool_proj")
    pooled = layers.UpSampling2D((h, w), interpolation="bilinear", name="aspp_pool_up")(pooled)
    branches = [conv_bn_act(x, filters, 1, "aspp_1x1")]
    # A rate at least the map's size reads only zero padding off-centre: the branch is its centre
    # tap, whatever the rate beyond that. Capping the rate at the size is therefore exact (same
    # outputs, gradients and weights), and TensorFlow's CPU convolution, whose cost grows with the
    # rate, no longer spends most of a 128 px step on rates 12 and 18 (8x8 map): DeepLabV3+
    # trains 1.78x faster (bench.profile, bench.train).
    branches += [
        conv_bn_act(x, filters, 3, f"aspp_d{rate}", dilation_rate=(min(rate, h), min(rate, w)))
        for rate in rates
    ]
    x = layers.Concatenate(name="aspp_concat")([*branches, pooled])
    return conv_bn_act(x, filters, 1, "aspp_out")


def build_deeplabv3plus(
    image_size: int | tuple[int, int] = 128,
    width: int = 256,
    backbone: str = "resnet101",
    backbone_weights: str | None = "none",
    name: str = "deeplabv3plus",
) -> keras.Model:
    """`width`: ASPP/decoder filters (256 in the paper). Inputs: RGB in [0, 1], size divisible by 16."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % 16 or w % 16:
        raise ValueError(f"image size {h}x{w} is not divisible by 16 (the backbone's output stride)")
    resnet = dilated_resnet(backbone, (h, w), backbone_weights)
    inputs = image_input(h, w)
    # The reference feeds [0, 1] RGB to a ResNet trained from scratch; ImageNet weights expect
    # their own (caffe) input, so only they get it.
    pretrained = backbone_weights not in (None, "none")
    low, high = resnet(caffe_preprocess(inputs) if pretrained else inputs)
    x = aspp(high, width)
    x = resize_align_corners(x, (low.shape[1], low.shape[2]), "decoder_up4")
    low = conv_bn_act(low, 48, 1, "decoder_low_proj")
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = conv_bn_act(x, width, 3, "decoder_a")
    x = conv_bn_act(x, width, 3, "decoder_b")
    # Upsampling the one logit rather than `width` feature maps: the same result (both steps are
    # linear), 1/width of the work.
    logits = layers.Conv2D(1, 1, name="logits")(x)
    logits = resize_align_corners(logits, (h, w), "logits_up4")
    return keras.Model(inputs, layers.Activation("sigmoid", dtype="float32", name="mask")(logits), name=name)
