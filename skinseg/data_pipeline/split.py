"""The run's splits: training, validation (the layout's own, or carved from the training data,
seeded) and test (copied from the layout as is: never part of training or model selection), and
split.json, the record of them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from skinseg.core.atomic import read_json, write_json
from skinseg.core.errors import DataError
from skinseg.data_pipeline.checks import check_pairs, problem_lines
from skinseg.data_pipeline.discovery import Pair, discover_pairs
from skinseg.data_pipeline.leakage import find_overlaps


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


def _rows(pairs: list[Pair], digests: dict, source_of: dict) -> list[dict]:
    rows = []
    for p in pairs:
        row = {"id": p.id, "image": p.image, "mask": p.mask}
        if p.image in digests:
            row["digest"] = digests[p.image]
        if p.image in source_of:
            row["source"] = source_of[p.image]
        rows.append(row)
    return rows


def write_split(
    path: str,
    splits: dict[str, list[Pair]],
    digests: dict | None = None,
    source_of: dict | None = None,
    **meta,
) -> None:
    rows = {name: _rows(pairs, digests or {}, source_of or {}) for name, pairs in splits.items()}
    write_json(path, {**meta, **rows})


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
class Source:
    """One data set of a run (a run may train on several: `--data A --data B`)."""

    root: str
    layout: str
    validation_from: str  # "layout" or "train"
    counts: dict = field(default_factory=dict)  # split -> pairs

    def describe(self, val_fraction: float) -> str:
        where = "the layout's" if self.validation_from == "layout" else f"{val_fraction:g} of training"
        c = self.counts
        return f"{self.root} ({self.layout}): {c['train']} train, {c['validation']} validation ({where}), {c['test']} test pairs"


@dataclass
class Splits:
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]
    sources: list[Source]
    excluded: list = field(default_factory=list)  # problems of the pairs left out (--skip-bad)
    digests: dict = field(default_factory=dict)  # image path -> digest of its decoded pixels
    source_of: dict = field(default_factory=dict)  # image path -> index in `sources`
    overlap: list = field(default_factory=list)  # leakage let through with --allow-overlap

    def as_dict(self) -> dict[str, list[Pair]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def meta(self, seed: int, val_fraction: float) -> dict:
        first = self.sources[0]
        return {
            "data": first.root,
            "layout": first.layout,
            "validation_from": first.validation_from,
            "sources": [vars(source) for source in self.sources],
            "seed": seed,
            "val_fraction": val_fraction,
            "excluded": [p.to_dict() for p in self.excluded],
            "allowed_overlap": [p.to_dict() for p in self.overlap],
            "digests": self.digests,
            "source_of": self.source_of,
        }


def _checked_source(root, masks, size, val_from):
    """One source's pairs, decode-checked: (discovery, {split: usable infos}, unusable problems)."""
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
    checked, unusable = {}, []
    for name in (train_name, "validation", "test"):
        if name == "validation" and not (has_validation and val_from in ("auto", "layout")):
            continue
        infos, problems = check_pairs(found.splits.get(name, []), decode_size=size)
        checked["train" if name == train_name else name] = infos
        unusable += [p for p in [*found.errors_of(name), *problems] if p.severity == "error"]
    return found, checked, list(dict.fromkeys(unusable))


def assemble_splits(
    sources: list[tuple[str, str | None]],
    *,
    image_size: int,
    val_fraction: float,
    val_from: str,
    seed: int,
    skip_bad: bool,
    allow_overlap: bool = False,
) -> Splits:
    """Discover every source's pairs, decode-check them, look for leakage between the splits (of
    all sources together) and settle the three splits: the validation split per source (its
    layout's own, or carved from its training data), the test splits kept per source. Raises
    DataError (naming the files) before anything is written anywhere."""
    size = (image_size, image_size)
    per_source = [_checked_source(root, masks, size, val_from) for root, masks in sources]
    unusable = [p for _, _, problems in per_source for p in problems]
    if unusable and not skip_bad:  # every split and every set at once: one round of fixing
        raise DataError(
            f"{len(unusable)} unusable file(s):\n{problem_lines(unusable)}\n"
            "Fix or remove these files, or pass --skip-bad to leave them out"
        )
    if unusable:
        logging.getLogger("skinseg").warning(
            "leaving out %d unusable file(s) (--skip-bad):\n%s", len(unusable), problem_lines(unusable)
        )
    for found, checked, _ in per_source:
        if not checked["train"]:
            raise DataError(f"{found.root}: no usable training pairs")
    merged = {
        name: [i for _, checked, _ in per_source for i in checked.get(name, [])]
        for name in ("train", "validation", "test")
    }
    overlaps = find_overlaps({name: infos for name, infos in merged.items() if infos})
    leaks = [p for p in overlaps if p.severity == "error"]
    for duplicate in (p for p in overlaps if p.severity == "warning"):
        logging.getLogger("skinseg").warning("%s: %s", duplicate.file, duplicate.problem)
    roots = ", ".join(found.root for found, _, _ in per_source)
    if leaks and not allow_overlap:
        raise DataError(
            f"{len(leaks)} image(s) in more than one split of {roots}:\n{problem_lines(leaks)}\n"
            "Remove them from one split, or pass --allow-overlap to train anyway (recorded in split.json)"
        )
    if leaks:
        logging.getLogger("skinseg").warning(
            "%d image(s) in more than one split (--allow-overlap)", len(leaks)
        )
    train, val, test, described, excluded = [], [], [], [], []
    digests, source_of = {}, {}
    for index, (found, checked, left_out) in enumerate(per_source):
        source_train = [i.pair for i in checked["train"]]
        if "validation" in checked:
            source_val, origin = [i.pair for i in checked["validation"]], "layout"
        else:
            (source_train, source_val), origin = carve_validation(source_train, val_fraction, seed), "train"
        source_test = [i.pair for i in checked.get("test", [])]
        counts = {"train": len(source_train), "validation": len(source_val), "test": len(source_test)}
        described.append(Source(found.root, found.layout, origin, counts))
        train += source_train
        val += source_val
        test += source_test
        excluded += left_out
        for infos in checked.values():
            for info in infos:
                digests[info.pair.image] = info.digest
                source_of[info.pair.image] = index
    return Splits(train, val, test, described, excluded, digests, source_of, leaks)
