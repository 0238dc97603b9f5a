"""Convert the reference PyTorch HarDNet68 checkpoint (e.g. `hardnet68.pth` of the HarDNet and
HarDNet-MSEG repositories) into encoder weights that `--backbone-weights PATH` loads.

Keras layer `base3_layer5_conv` is PyTorch's `base.3.layers.5.conv`, `base4_bn` is `base.4.norm`.
The checkpoint is read with torch when it is a `.pth`/`.pt` file, or from a `.npz` of the same keys.
  python -m skinseg.models convert-hardnet68 hardnet68.pth hardnet68_encoder.weights.h5
"""

from __future__ import annotations

import re

import numpy as np
from keras import layers

from skinseg.core.atomic import atomic_path
from skinseg.models.hardnet_mseg import hardnet68_encoder

_PREFIXES = ("module.", "hardnet.")


def _torch_name(keras_name: str) -> str:
    """`base3_layer5` -> `base.3.layers.5`; `base4` -> `base.4`."""
    match = re.fullmatch(r"base(\d+)(?:_layer(\d+))?", keras_name)
    if not match:
        raise ValueError(f"unexpected HarDNet68 layer {keras_name}")
    block, layer = match.groups()
    return f"base.{block}" + (f".layers.{layer}" if layer is not None else "")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path) as data:
            state = {k: data[k] for k in data.files}
    else:
        try:
            import torch
        except ImportError:
            raise RuntimeError(
                f"{path}: reading a PyTorch checkpoint needs torch (pip install torch)"
            ) from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        state = {k: v.numpy() for k, v in state.items() if hasattr(v, "numpy")}
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def hardnet68_from_state_dict(state: dict[str, np.ndarray], image_size=(128, 128)):
    """A HarDNet68 encoder holding the checkpoint's weights."""
    encoder = hardnet68_encoder(image_size)
    used = set()
    for layer in encoder.layers:
        if isinstance(layer, layers.Conv2D):
            key = f"{_torch_name(layer.name.removesuffix('_conv'))}.conv.weight"
            layer.set_weights([np.transpose(state[key], (2, 3, 1, 0))])  # OIHW -> HWIO
            used.add(key)
        elif isinstance(layer, layers.BatchNormalization):
            base = f"{_torch_name(layer.name.removesuffix('_bn'))}.norm"
            keys = [f"{base}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            layer.set_weights([state[k] for k in keys])
            used.update(keys)
    missing = [
        k
        for k in state
        if k.startswith("base.")
        and k not in used
        and not k.endswith("num_batches_tracked")
        and not k.startswith("base.16.")
    ]  # base.16 is the ImageNet classifier
    if missing:
        raise ValueError(f"checkpoint keys not used (not a HarDNet68?): {', '.join(missing[:5])}")
    return encoder


def convert_hardnet68(source: str, target: str) -> None:
    encoder = hardnet68_from_state_dict(load_state_dict(source))
    with atomic_path(target) as tmp:
        encoder.save_weights(tmp)
