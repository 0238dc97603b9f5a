"""DeepLabV3+ (Chen et al. 2018) on a Keras ResNet50 backbone, after keras-io's example, with
masks kept binary by the pipeline (nearest-neighbour resizing) rather than resized bilinearly."""

from __future__ import annotations

import os

import keras
from keras import layers

from models.blocks import CaffePreprocess, conv_bn_act, image_input, set_bn_momentum, sigmoid_head

HIGH_LEVEL = "conv4_block6_2_relu"  # stride 16
LOW_LEVEL = "conv2_block3_2_relu"  # stride 4
RESNET50_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


class BackboneWeightsError(RuntimeError):
    """Pretrained weights that cannot be had; the message says how to pass a local file."""


def _cached_weights(filename: str) -> str | None:
    cache = os.path.join(
        os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")),
        "models",
        filename,
    )
    return cache if os.path.isfile(cache) else None


def resnet50_backbone(image_size: tuple[int, int], weights: str | None) -> keras.Model:
    """ResNet50 (no top) emitting the stride-4 and stride-16 features.

    `weights`: "imagenet" (downloaded once into ~/.keras/models), "none"/None, or a path to a
    Keras ResNet50 no-top weights file."""
    if weights in (None, "none"):
        source = None
    elif weights == "imagenet":
        source = "imagenet"
    else:
        if not os.path.isfile(weights):
            raise BackboneWeightsError(f"{weights}: backbone weights file not found")
        source = weights
    try:
        resnet = keras.applications.ResNet50(include_top=False, weights=source, input_shape=(*image_size, 3))
    except BackboneWeightsError:
        raise
    except Exception as err:
        if source != "imagenet":
            raise BackboneWeightsError(
                f"{weights}: not loadable as ResNet50 no-top weights ({err})"
            ) from None
        raise BackboneWeightsError(
            f"ImageNet ResNet50 weights could not be downloaded ({type(err).__name__}: {err}). "
            f"On a machine without network access, copy {RESNET50_NOTOP} into ~/.keras/models/ "
            "or pass its path: --backbone-weights /path/to/" + RESNET50_NOTOP + "; or train from "
            "scratch with --backbone-weights none"
        ) from None
    return keras.Model(
        resnet.input,
        [resnet.get_layer(LOW_LEVEL).output, resnet.get_layer(HIGH_LEVEL).output],
        name="resnet50",
    )


def aspp(x, filters: int, rates=(6, 12, 18)):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, and image pooling branches."""
    h, w = x.shape[1], x.shape[2]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = conv_bn_act(pooled, filters, 1, "aspp_pool_proj")
    pooled = layers.UpSampling2D((h, w), interpolation="bilinear", name="aspp_pool_up")(pooled)
    branches = [pooled, conv_bn_act(x, filters, 1, "aspp_1x1")]
    branches += [conv_bn_act(x, filters, 3, f"aspp_d{rate}", dilation_rate=rate) for rate in rates]
    x = layers.Concatenate(name="aspp_concat")(branches)
    return conv_bn_act(x, filters, 1, "aspp_out")


def build_deeplabv3plus(
    image_size: int | tuple[int, int] = 128,
    width: int = 256,
    backbone_weights: str | None = "none",
    name: str = "deeplabv3plus",
    color_constancy: bool = False,
) -> keras.Model:
    """`width`: ASPP/decoder filters (256 in the paper). Inputs: RGB in [0, 1], size divisible by 16."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % 16 or w % 16:
        raise ValueError(f"image size {h}x{w} is not divisible by 16 (the backbone's output stride)")
    backbone = resnet50_backbone((h, w), backbone_weights)
    set_bn_momentum(backbone)
    inputs, x = image_input(h, w, color_constancy)
    low, high = backbone(CaffePreprocess(name="resnet_preprocess")(x))
    x = aspp(high, width)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="decoder_up4")(x)
    low = conv_bn_act(low, 48, 1, "decoder_low_proj")
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = conv_bn_act(x, width, 3, "decoder_a")
    x = conv_bn_act(x, width, 3, "decoder_b")
    x = layers.UpSampling2D(4, interpolation="bilinear", name="decoder_up_final")(x)
    return keras.Model(inputs, sigmoid_head(x), name=name)
