"""The run's splits: training, validation (the layout's own, or carved from the training data,
seeded) and test (copied from the layout as is: never part of training or model selection), and
split.json, the record of them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from skinseg.data_pipeline.atomic import read_json, write_json
from skinseg.data_pipeline.checks import usable_pairs
from skinseg.data_pipeline.discovery import Pair, discover_pairs
from skinseg.data_pipeline.errors import DataError


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


def _rows(pairs: list[Pair], digests: dict) -> list[dict]:
    rows = []
    for p in pairs:
        row = {"id": p.id, "image": p.image, "mask": p.mask}
        if p.image in digests:
            row["digest"] = digests[p.image]
        rows.append(row)
    return rows


def write_split(path: str, splits: dict[str, list[Pair]], digests: dict | None = None, **meta) -> None:
    write_json(path, {**meta, **{name: _rows(pairs, digests or {}) for name, pairs in splits.items()}})


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


@dataclass
class Splits:
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]
    root: str
    layout: str
    validation_from: str  # "layout" or "train"
    excluded: list = field(default_factory=list)  # problems of the pairs left out (--skip-bad)
    digests: dict = field(default_factory=dict)  # image path -> digest of its decoded pixels
    overlap: list = field(default_factory=list)  # leakage let through with --allow-overlap

    def as_dict(self) -> dict[str, list[Pair]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def meta(self, seed: int, val_fraction: float) -> dict:
        return {
            "data": self.root,
            "layout": self.layout,
            "validation_from": self.validation_from,
            "seed": seed,
            "val_fraction": val_fraction,
            "excluded": [p.to_dict() for p in self.excluded],
            "allowed_overlap": [p.to_dict() for p in self.overlap],
            "digests": self.digests,
        }


def assemble_splits(
    root: str,
    masks: str | None,
    *,
    image_size: int,
    val_fraction: float,
    val_from: str,
    seed: int,
    skip_bad: bool,
    allow_overlap: bool = False,
) -> Splits:
    """Discover the pairs, decode-check them, look for leakage between the splits and settle
    the three splits. Raises DataError (naming the files) before anything is written anywhere."""
    import logging

    from skinseg.data_pipeline.checks import problem_lines
    from skinseg.data_pipeline.leakage import find_overlaps

    found = discover_pairs(root, masks)
    train_name = "train" if "train" in found.splits else "all" if "all" in found.splits else None
    if train_name is None:
        raise DataError(
            f"{found.root}: no training split found (splits: {', '.join(found.splits) or 'none'})"
        )
    has_validation = bool(found.splits.get("validation"))
    if val_from == "layout" and not has_validation:
        raise DataError(
            f"{found.root}: --val-from layout, but this {found.layout} layout has no validation split; "
            "use --val-from train"
        )
    size = (image_size, image_size)
    checked, excluded = {}, []
    for name, what in ((train_name, "training"), ("validation", "validation"), ("test", "test")):
        if name == "validation" and not (has_validation and val_from in ("auto", "layout")):
            continue
        infos, errors = usable_pairs(found.splits.get(name, []), found.errors_of(name), size, skip_bad, what)
        checked[name], excluded = infos, [*excluded, *errors]
    if not checked[train_name]:
        raise DataError(f"{found.root}: no usable training pairs")
    overlaps = find_overlaps(checked)
    leaks = [p for p in overlaps if p.severity == "error"]
    for duplicate in (p for p in overlaps if p.severity == "warning"):
        logging.getLogger("skinseg").warning("%s: %s", duplicate.file, duplicate.problem)
    if leaks and not allow_overlap:
        raise DataError(
            f"{len(leaks)} image(s) in more than one split of {found.root}:\n{problem_lines(leaks)}\n"
            "Remove them from one split, or pass --allow-overlap to train anyway (recorded in split.json)"
        )
    if leaks:
        logging.getLogger("skinseg").warning(
            "%d image(s) in more than one split (--allow-overlap)", len(leaks)
        )
    train = [i.pair for i in checked[train_name]]
    if "validation" in checked:
        val, source = [i.pair for i in checked["validation"]], "layout"
    else:
        (train, val), source = carve_validation(train, val_fraction, seed), "train"
    digests = {i.pair.image: i.digest for infos in checked.values() for i in infos}
    test = [i.pair for i in checked.get("test", [])]
    return Splits(train, val, test, found.root, found.layout, source, excluded, digests, leaks)
