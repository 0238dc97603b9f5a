"""The seeded train/validation split, carved from the training data and kept on disk.

The test split is copied from the layout as is; it is never part of training or model selection.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipeline.atomic import read_json, write_json
from data_pipeline.discovery import Pair
from data_pipeline.errors import DataError


def carve_validation(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Deterministic for a given (set of IDs, fraction, seed), whatever the input order."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(pairs, key=lambda p: p.id)
    n_val = int(round(len(ordered) * val_fraction))
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    order = np.random.default_rng(seed).permutation(len(ordered))
    val_index = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(ordered) if i not in val_index]
    val = [p for i, p in enumerate(ordered) if i in val_index]
    return train, val


def _rows(pairs: list[Pair]) -> list[dict]:
    return [{"id": p.id, "image": p.image, "mask": p.mask} for p in pairs]


def write_split(path: str, splits: dict[str, list[Pair]], **meta) -> None:
    write_json(path, {**meta, **{name: _rows(pairs) for name, pairs in splits.items()}})


def read_split(path: str) -> dict[str, list[Pair]]:
    """The pair lists of a split.json (metadata keys are skipped)."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the split ({err})") from None
    out = {}
    for name in ("train", "validation", "test"):
        rows = data.get(name, [])
        out[name] = [Pair(r["id"], r["image"], r["mask"]) for r in rows]
    missing = [p.image for rows in out.values() for p in rows[:1] if not os.path.exists(p.image)]
    if missing:
        raise DataError(f"{path}: lists {missing[0]}, which no longer exists (was the data moved?)")
    return out
