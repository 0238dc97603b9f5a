"""HarDNet-MSEG (Huang et al. 2021): a HarDNet68 encoder, receptive-field blocks on its stride 8,
16 and 32 features, and the cascaded partial decoder's aggregation, upsampled x8.

Faithful to the reference PyTorch code (james128333/HarDNet-MSEG), including its quirks: the
decoder's BasicConv2d is conv + BN with *no* ReLU, and the encoder uses ReLU6. Layer names follow
the PyTorch module names (`base3_layer5` is `base.3.layers.5`) so that converted weights map 1:1.
Trainable parameters: 17,423,837 (encoder 16,540,348 + decoder 883,489), exactly the reference's
forward pass (PyTorch counts BatchNorm's running statistics as buffers, like Keras' non-trainable
weights). The reference's unused reverse-attention branches and ImageNet classifier are left out.
Strided convolutions and the stem's max-pool pad symmetrically, as PyTorch does (TF's "same"
would pad the bottom and right only, shifting every feature map against converted weights).
One difference: Keras' bilinear upsampling uses half-pixel centres where the reference used
PyTorch's align_corners=True; weights transfer, outputs differ slightly at the borders.
"""

from __future__ import annotations

import keras
from keras import layers

from skinseg.models.blocks import batch_norm, image_input

# HarDNet68
STEM = (32, 64)
GROWTH = (14, 16, 20, 40, 160)
N_LAYERS = (8, 16, 16, 16, 4)
TRANSITION = (128, 256, 320, 640, 1024)
DOWNSAMPLE = (1, 0, 1, 1, 0)
GRMUL = 1.7


def _conv_bn(x, filters, kernel, name, *, strides=1, dilation=1, activation=None, padding="same"):
    if strides > 1:  # PyTorch pads kernel // 2 on every side; TF's "same" would pad bottom/right only
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = batch_norm(x, f"{name}_bn")
    if activation == "relu6":
        x = layers.ReLU(6.0, name=f"{name}_relu6")(x)
    return x


def hard_links(layer: int, base_channels: int, growth: int) -> tuple[int, int, list[int]]:
    """(output channels, input channels, source layers) of layer `layer` of a HarD block:
    layer k takes layers k - 2**i for every 2**i dividing k; its width grows by GRMUL per link
    beyond the first, rounded to an even number."""
    if layer == 0:
        return base_channels, 0, []
    out_channels = growth
    links = []
    for i in range(10):
        step = 2**i
        if layer % step == 0:
            links.append(layer - step)
            if i > 0:
                out_channels *= GRMUL
    out_channels = int(int(out_channels + 1) / 2) * 2
    in_channels = sum(hard_links(k, base_channels, growth)[0] for k in links)
    return out_channels, in_channels, links


def hard_block(x, growth: int, n_layers: int, name: str):
    """Outputs the concatenation of the odd layers and the last one (the base is not kept)."""
    outputs = [x]
    for j in range(n_layers):
        out_channels, _, links = hard_links(j + 1, x.shape[-1], growth)
        sources = [outputs[k] for k in links]
        tin = sources[0] if len(sources) == 1 else layers.Concatenate(name=f"{name}_layer{j}_cat")(sources)
        outputs.append(_conv_bn(tin, out_channels, 3, f"{name}_layer{j}", activation="relu6"))
    t = len(outputs)
    kept = [outputs[i] for i in range(t) if i == t - 1 or i % 2 == 1]
    return layers.Concatenate(name=f"{name}_out")(kept)


def hardnet68(inputs) -> list:
    """The encoder's features at strides 4, 8, 16 and 32 (128, 320, 640, 1024 channels)."""
    x = _conv_bn(inputs, STEM[0], 3, "base0", strides=2, activation="relu6")
    x = _conv_bn(x, STEM[1], 3, "base1", activation="relu6")
    # nn.MaxPool2d(3, 2, padding=1): symmetric. Zero padding equals PyTorch's -inf padding here,
    # because the input comes out of a ReLU6 and is never negative.
    x = layers.ZeroPadding2D(1, name="base2_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="base2_pool")(x)
    features = []
    index = 3
    for i in range(len(N_LAYERS)):
        x = hard_block(x, GROWTH[i], N_LAYERS[i], f"base{index}")
        x = _conv_bn(x, TRANSITION[i], 1, f"base{index + 1}", activation="relu6")
        features.append(x)
        index += 2
        if DOWNSAMPLE[i]:
            x = layers.MaxPooling2D(2, name=f"base{index}_pool")(x)
            index += 1
    return [features[0], features[2], features[3], features[4]]


def rfb(x, channels: int, name: str):
    """RFB_modified: four branches of growing receptive field, fused, plus a 1x1 shortcut."""
    branches = [_conv_bn(x, channels, 1, f"{name}_branch0")]
    for b, k in ((1, 3), (2, 5), (3, 7)):
        y = _conv_bn(x, channels, 1, f"{name}_branch{b}_0")
        y = _conv_bn(y, channels, (1, k), f"{name}_branch{b}_1")
        y = _conv_bn(y, channels, (k, 1), f"{name}_branch{b}_2")
        y = _conv_bn(y, channels, 3, f"{name}_branch{b}_3", dilation=k)
        branches.append(y)
    fused = _conv_bn(layers.Concatenate(name=f"{name}_cat")(branches), channels, 3, f"{name}_conv_cat")
    shortcut = _conv_bn(x, channels, 1, f"{name}_conv_res")
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([fused, shortcut]))


def aggregation(x1, x2, x3, channels: int):
    """Cascaded partial decoder: x1 (stride 32), x2 (16), x3 (8) -> one logit map at stride 8."""

    def up(x, name):
        return layers.UpSampling2D(2, interpolation="bilinear", name=name)(x)

    x2_1 = layers.Multiply(name="agg_x2_1")(
        [_conv_bn(up(x1, "agg_up1"), channels, 3, "agg_conv_upsample1"), x2]
    )
    x3_1 = layers.Multiply(name="agg_x3_1")(
        [
            _conv_bn(up(up(x1, "agg_up2a"), "agg_up2b"), channels, 3, "agg_conv_upsample2"),
            _conv_bn(up(x2, "agg_up3"), channels, 3, "agg_conv_upsample3"),
            x3,
        ]
    )
    x2_2 = layers.Concatenate(name="agg_cat2")(
        [x2_1, _conv_bn(up(x1, "agg_up4"), channels, 3, "agg_conv_upsample4")]
    )
    x2_2 = _conv_bn(x2_2, 2 * channels, 3, "agg_conv_concat2")
    x3_2 = layers.Concatenate(name="agg_cat3")(
        [x3_1, _conv_bn(up(x2_2, "agg_up5"), 2 * channels, 3, "agg_conv_upsample5")]
    )
    x3_2 = _conv_bn(x3_2, 3 * channels, 3, "agg_conv_concat3")
    x = _conv_bn(x3_2, 3 * channels, 3, "agg_conv4")
    return layers.Conv2D(1, 1, name="logits")(x)


def build_hardnet_mseg(
    image_size: int | tuple[int, int] = 128,
    channels: int = 32,
    encoder_weights: str | None = None,
    name: str = "hardnet_mseg",
) -> keras.Model:
    """Inputs: RGB in [0, 1], size divisible by 32. `encoder_weights`: optional path to a
    `.weights.h5` file of the HarDNet68 encoder (`hardnet68_encoder(...)`), e.g. converted from
    the PyTorch checkpoint."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h % 32 or w % 32:
        raise ValueError(f"image size {h}x{w} is not divisible by 32 (the encoder's output stride)")
    inputs = image_input(h, w)
    encoder = hardnet68_encoder((h, w))
    if encoder_weights not in (None, "none"):
        encoder.load_weights(encoder_weights)
    _, x2, x3, x4 = encoder(inputs)
    logits = aggregation(
        rfb(x4, channels, "rfb4_1"),
        rfb(x3, channels, "rfb3_1"),
        rfb(x2, channels, "rfb2_1"),
        channels,
    )
    logits = layers.UpSampling2D(8, interpolation="bilinear", name="logits_up8")(logits)
    outputs = layers.Activation("sigmoid", dtype="float32", name="mask")(logits)
    return keras.Model(inputs, outputs, name=name)


def hardnet68_encoder(image_size: tuple[int, int]) -> keras.Model:
    inputs = keras.Input((*image_size, 3), name="image")
    return keras.Model(inputs, hardnet68(inputs), name="hardnet68")
