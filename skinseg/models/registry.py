"""Model names -> builders. `build_model(name, ...)` is the one way the CLI makes a model.

Importing this module is cheap (no Keras): the command lines list the names in `--help`."""

from __future__ import annotations

from dataclasses import dataclass

from skinseg.core.errors import SkinsegError


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # "unet", "deeplabv3plus" or "hardnet_mseg"
    width: int | None  # UNet: first-level filters; DeepLab: ASPP/decoder filters; HarDNet: RFB channels
    depth: int | None  # UNet levels (poolings)
    reference_row: str


PRESETS = {
    p.name: p
    for p in (
        Preset("baseline", "unet", 64, 4, "Baseline UNet (64 filters, 4 levels)"),
        Preset("bigger", "unet", 128, 4, "Bigger UNet (128/4)"),
        Preset("deeper", "unet", 64, 6, "Deeper UNet (64/6)"),
        Preset("bigger_deeper", "unet", 128, 6, "Bigger+deeper + aug (128/6)"),
        Preset("slightly_bigger_deeper", "unet", 96, 6, "Slightly bigger+deeper + aug (96/6)"),
        Preset("deeplabv3plus", "deeplabv3plus", 256, None, "DeepLabV3+ ResNet"),
        Preset("hardnet_mseg", "hardnet_mseg", 32, None, "HarDNet-MSEG"),
    )
}
ALIASES = {"unet": "baseline"}
BACKBONES = ("resnet101", "resnet50")
PADDINGS = ("reflect", "zeros")
DEFAULT_MAX_FILTERS = 1024

# CPU-sized variants (bench, README's CPU commands): UNet widths halved or quartered so that a
# 2-core CPU trains each at 128 px in minutes per epoch; DeepLab and HarDNet are used as they are.
CPU_SIZED = {
    "baseline": {"width": 32},
    "bigger": {"width": 64},
    "deeper": {"width": 32},
    "bigger_deeper": {"width": 64},
    "slightly_bigger_deeper": {"width": 48},
    "deeplabv3plus": {},
    "hardnet_mseg": {},
}


class UnknownModelError(SkinsegError, ValueError):
    """A model name not in the registry; the message lists the valid ones."""


def resolve(name: str) -> Preset:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        valid = ", ".join([*PRESETS, *(f"{a} (= {t})" for a, t in ALIASES.items())])
        raise UnknownModelError(f"unknown model {name!r}; valid names: {valid}")
    return PRESETS[key]


def check_geometry(
    name: str, image_size: int, width: int | None = None, depth: int | None = None, padding: str = "reflect"
) -> None:
    """The checks every builder makes, without building anything (the command line makes them
    before it writes a run folder). Raises ValueError saying what to change."""
    preset = resolve(name)
    if width is not None and width < 1:
        raise ValueError(f"--width must be at least 1; got {width}")
    if depth is not None and preset.family != "unet":
        raise ValueError(f"--depth applies to the UNet family only, not {preset.name}")
    if depth is not None and not 1 <= depth <= 8:
        raise ValueError(f"--depth must be between 1 and 8; got {depth}")
    if preset.family == "unet":
        levels = depth or preset.depth
        if image_size % 2**levels:
            raise ValueError(
                f"--image-size {image_size} is not divisible by 2**depth = {2**levels} ({preset.name}, "
                f"{levels} levels); try {image_size // 2**levels * 2**levels or 2**levels}"
            )
        if padding == "reflect" and image_size // 2**levels < 2:
            raise ValueError(
                f"--image-size {image_size} leaves {image_size // 2**levels} pixel(s) at the bottom of "
                f"{levels} levels; reflection padding needs 2 (a larger size, or --padding zeros)"
            )
        return
    stride = 16 if preset.family == "deeplabv3plus" else 32
    if image_size % stride:
        raise ValueError(
            f"--image-size {image_size} is not divisible by {stride} ({preset.name}'s output stride)"
        )


def model_names() -> list[str]:
    return [*PRESETS, *ALIASES]


def build_model(
    name: str,
    image_size: int | tuple[int, int] = 128,
    *,
    width: int | None = None,
    depth: int | None = None,
    max_filters: int | None = DEFAULT_MAX_FILTERS,
    padding: str = "reflect",
    backbone: str = "resnet101",
    backbone_weights: str | None = "none",
):
    """Build preset `name`; `width`/`depth` override the preset (CPU-sized variants).
    `backbone_weights` is "imagenet", "none" or a path (DeepLab: its ResNet; HarDNet: encoder)."""
    preset = resolve(name)
    width = width or preset.width
    # Each family's module imports Keras: loaded here, when a model is built, so that the commands'
    # --help (which reads this registry for its choices) answers without TensorFlow.
    if preset.family == "unet":
        from skinseg.models.unet import build_unet

        return build_unet(image_size, width, depth or preset.depth, max_filters, preset.name, padding)
    if depth is not None:
        raise ValueError(f"--depth applies to the UNet family only, not {preset.name}")
    if preset.family == "deeplabv3plus":
        from skinseg.models.deeplab import build_deeplabv3plus

        return build_deeplabv3plus(image_size, width, backbone, backbone_weights, name=preset.name)
    from skinseg.models.hardnet_mseg import build_hardnet_mseg

    if backbone_weights == "imagenet":
        raise ValueError(
            "no ImageNet HarDNet68 weights ship with Keras; pass a local encoder weights file "
            "(.weights.h5) with --backbone-weights PATH, or none"
        )
    return build_hardnet_mseg(image_size, width, backbone_weights, name=preset.name)
