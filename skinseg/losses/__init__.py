"""Losses by name: bce, dice, bce_dice, focal, structure."""

from __future__ import annotations

import keras

from skinseg.losses.dice import BceDice
from skinseg.losses.flooding import flooded, flooded_gradient_only
from skinseg.losses.structure import StructureLoss

LOSS_NAMES = ("bce", "dice", "bce_dice", "focal", "structure")


def get_loss(name: str) -> keras.losses.Loss:
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "dice":
        return keras.losses.Dice(name="dice")
    if name == "bce_dice":
        return BceDice()
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0, name="focal")
    if name == "structure":
        return StructureLoss()
    raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")


__all__ = ["BceDice", "StructureLoss", "flooded", "flooded_gradient_only", "get_loss", "LOSS_NAMES"]
