"""Weight initialisation schemes applied to a built network (`--init`).

"keras" leaves Keras' defaults: Glorot-uniform kernels, zero biases. "reference" re-draws the
weights as the reference's PyTorch code had them (CreamNuts/Skin-Leison-Segmentation-Homework):

- UNet (models/Unet.py): every Conv2d `kaiming_normal_(nonlinearity='relu')`, i.e. N(0, 2 / fan_in);
  its biases and the ConvTranspose2d layers keep PyTorch's default.
- DeepLabV3+ (models/deeplab_resnet.py): the ResNet's and the ASPP branches' convolutions
  `kaiming_normal_` (the same N(0, 2 / fan_in)); its own `__init_weight` is never called, so the
  image-pooling branch, the ASPP projection, the decoder and the classifier keep PyTorch's default.
- HarDNet-MSEG: no init code, PyTorch's default everywhere.

PyTorch's default for a convolution (`kaiming_uniform_(a=sqrt(5))`) is U(-b, b) with
b = 1 / sqrt(fan_in), for the kernel and for the bias alike. fan_in counts what PyTorch counts: for
a Conv2d, in_channels x kh x kw; for a ConvTranspose2d, out_channels x kh x kw (its weight tensor is
(in, out, kh, kw) and PyTorch reads dimension 1), which is also what Keras' kernel shape
(kh, kw, out, in) gives from its first three dimensions. BatchNorm: scale 1, offset 0 in both.
"""

from __future__ import annotations

import keras
import numpy as np

INITS = ("keras", "reference")


def _fan_in(kernel_shape) -> int:
    """kh x kw x (input channels of a Conv2D | output channels of a Conv2DTranspose)."""
    return int(np.prod(kernel_shape[:3]))


def _pytorch_default(layer, rng) -> None:
    bound = 1.0 / np.sqrt(_fan_in(layer.kernel.shape))
    layer.kernel.assign(rng.uniform(-bound, bound, layer.kernel.shape).astype("float32"))
    if layer.use_bias:
        layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype("float32"))


def _kaiming_normal(layer, rng) -> None:
    """Kernel N(0, 2 / fan_in); the bias (if any) keeps PyTorch's default."""
    fan_in = _fan_in(layer.kernel.shape)
    layer.kernel.assign((rng.standard_normal(layer.kernel.shape) * np.sqrt(2.0 / fan_in)).astype("float32"))
    if layer.use_bias:
        bound = 1.0 / np.sqrt(fan_in)
        layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape).astype("float32"))


def _convolutions(model):
    """(layer, inside a nested model's name or None) for every trainable convolution."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from ((inner, layer.name) for inner, _ in _convolutions(layer))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)) and layer.trainable:
            yield layer, None


def _kaiming_here(family: str, layer, nested: str | None) -> bool:
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return False
    if family == "unet":
        return True
    if family == "deeplabv3plus":  # the backbone (a nested model) and the four atrous branches
        return nested is not None or layer.name.startswith(("aspp_1x1", "aspp_d"))
    return False


def initialize(model: keras.Model, scheme: str, family: str, seed: int = 0) -> keras.Model:
    """Re-draw `model`'s convolution weights under `scheme` (seeded); returns the model."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if scheme == "keras":
        return model
    rng = np.random.default_rng(seed)
    for layer, nested in _convolutions(model):
        if _kaiming_here(family, layer, nested):
            _kaiming_normal(layer, rng)
        else:
            _pytorch_default(layer, rng)
    return model
