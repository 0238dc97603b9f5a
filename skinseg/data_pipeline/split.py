"""The run's splits: training, validation (the layout's own, or carved from the training data,
seeded) and test (copied from the layout as is: never part of training or model selection), and
split.json, the record of them."""

from __future__ import annotations

import dataclasses
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


def assign_folds(infos, folds: int, seed: int = 0) -> dict[str, int]:
    """Image ID -> fold, stratified by lesion size: the pairs sorted by their mask's lesion
    fraction, each run of `folds` consecutive pairs spread over the folds in a seeded random order,
    so that every fold gets small, middling and large lesions alike. Depends only on the pairs (IDs
    and masks), not on their order or on the run's --seed: every run of a cross-validation, and
    every repeat of it, sees the same folds."""
    ordered = sorted(infos, key=lambda i: (i.lesion_fraction, i.pair.id))
    rng = np.random.default_rng(seed)
    out = {}
    for start in range(0, len(ordered), folds):
        block = ordered[start : start + folds]
        for info, fold in zip(block, rng.permutation(folds)[: len(block)]):
            out[info.pair.id] = int(fold)
    return out


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
    """The pair lists of a split.json (metadata keys are skipped). A damaged file (not an object,
    a split that is not a list of {id, image, mask} strings) is a DataError naming the file and the
    key, never a traceback."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the split ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a split written by train.py (a JSON object expected)")
    out = {}
    for name in ("train", "validation", "test"):
        rows = data.get(name, [])
        if not isinstance(rows, list):
            raise DataError(f"{path}: {name} is not a list of pairs")
        pairs = []
        for k, row in enumerate(rows):
            if not isinstance(row, dict) or not all(
                isinstance(row.get(key), str) for key in ("id", "image", "mask")
            ):
                raise DataError(f"{path}: {name}[{k}] is not a pair {{id, image, mask}} of strings")
            pairs.append(Pair(row["id"], row["image"], row["mask"]))
        out[name] = pairs
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
        test = f"{c['test']} test pairs"
        if "held_out_test" in c:  # a cross-validation fold
            test = f"{c['test']} out-of-fold test pairs ({c['held_out_test']} of its own test split not used)"
        return (
            f"{self.root} ({self.layout}): {c['train']} train, {c['validation']} validation ({where}), {test}"
        )


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
    cv: dict = field(default_factory=dict)  # cross-validation: folds, fold, image ID -> fold

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
            **({"cv": self.cv} if self.cv else {}),
        }


def read_id_list(path: str) -> set[str]:
    """Image IDs of a file: one per line (a CSV's first column), blank lines and # comments
    skipped, a header `id` too."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # a BOM (Excel) is not part of the first ID
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the list of IDs ({err})") from None
    ids = {line.split(",")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    ids.discard("id")
    if not ids:
        raise DataError(f"{path}: no image IDs in it")
    return ids


def _checked_source(root, masks, size, val_from, exclude=frozenset()):
    """One source's pairs, decode-checked: (discovery, {split: usable infos}, unusable problems)."""
    found = discover_pairs(root, masks)
    if exclude:  # left out before they are even decoded
        kept = {name: [p for p in pairs if p.id not in exclude] for name, pairs in found.splits.items()}
        found = dataclasses.replace(found, splits=kept)
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


def _refuse_repeated_sources(per_source) -> None:
    """The same data set given twice (`--data A --data link-to-A`, or a copy) would train on every
    image twice and count its test images twice as independent: refused, by content."""
    contents = [{info.digest for infos in checked.values() for info in infos} for _, checked, _ in per_source]
    for i in range(len(per_source)):
        for j in range(i + 1, len(per_source)):
            a, b = contents[i], contents[j]
            if a and b and (a <= b or b <= a):
                smaller, larger = (i, j) if len(a) <= len(b) else (j, i)
                raise DataError(
                    f"{per_source[smaller][0].root}: every image of it is also in {per_source[larger][0].root} "
                    "(the same data set given twice, by its pixels); give each data set once"
                )


def assemble_splits(
    sources: list[tuple[str, str | None]],
    *,
    image_size: int,
    val_fraction: float,
    val_from: str,
    seed: int,
    skip_bad: bool,
    allow_overlap: bool = False,
    folds: int = 0,
    fold: int | None = None,
    allow_empty_masks: bool = False,
    exclude: frozenset = frozenset(),
) -> Splits:
    """Discover every source's pairs, decode-check them, look for leakage between the splits (of
    all sources together) and settle the three splits: the validation split per source (its
    layout's own, or carved from its training data), the test splits kept per source. Raises
    DataError (naming the files) before anything is written anywhere.

    With `folds`, the run is fold `fold` of a cross-validation: every source's training pairs (and
    its layout's validation pairs) are pooled and cut into folds (assign_folds); fold `fold` becomes
    the test split (scored out of fold), validation is carved from the other folds, and the sources'
    own test splits are left out of the run (score them with evaluate.py --model ... --data)."""
    size = (image_size, image_size)
    per_source = [_checked_source(root, masks, size, val_from, exclude) for root, masks in sources]
    if exclude:  # a list that matches nothing is a wrong list, not a hold-out
        found = {
            p.id for src in sources for pairs in discover_pairs(*src).splits.values() for p in pairs
        } & exclude
        logging.getLogger("skinseg").info(
            "--exclude: %d of the %d listed IDs found and left out", len(found), len(exclude)
        )
    _refuse_repeated_sources(per_source)
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
        for name, infos in checked.items():
            if infos and not allow_empty_masks and all(i.lesion_fraction == 0 for i in infos):
                raise DataError(
                    f"{found.root}: every mask of its {name} split ({len(infos)}, e.g. {infos[0].pair.mask}) "
                    "is empty (no lesion pixel); a model trained or scored on them learns or proves "
                    "nothing. Check how the masks encode the lesion (python -m skinseg.data_pipeline "
                    "inspect), or pass --allow-empty-masks"
                )
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
    if folds:
        return _cv_splits(per_source, folds, fold or 0, val_fraction, seed, leaks)
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


def _cv_splits(per_source, folds: int, fold: int, val_fraction: float, seed: int, leaks) -> Splits:
    pool = [i for _, checked, _ in per_source for i in [*checked["train"], *checked.get("validation", [])]]
    if len(pool) < 2 * folds:
        raise DataError(
            f"--folds {folds}: {len(pool)} training image(s) are too few (each fold needs at least two)"
        )
    of = assign_folds(pool, folds)
    test = [i.pair for i in pool if of[i.pair.id] == fold]
    train, val = carve_validation([i.pair for i in pool if of[i.pair.id] != fold], val_fraction, seed)
    described, excluded, digests, source_of = [], [], {}, {}
    for index, (found, checked, left_out) in enumerate(per_source):
        ids = {i.pair.id for i in [*checked["train"], *checked.get("validation", [])]}
        counts = {
            "train": sum(p.id in ids for p in train),
            "validation": sum(p.id in ids for p in val),
            "test": sum(p.id in ids for p in test),
            "held_out_test": len(checked.get("test", [])),  # the layout's own, not used by the run
        }
        described.append(Source(found.root, found.layout, "train", counts))
        excluded += left_out
        for info in [*checked["train"], *checked.get("validation", [])]:
            digests[info.pair.image] = info.digest
            source_of[info.pair.image] = index
    cv = {
        "folds": folds,
        "fold": fold,
        "stratified_by": "lesion fraction of the mask",
        "pool": len(pool),
        "fold_of": dict(sorted(of.items())),
    }
    return Splits(train, val, test, described, excluded, digests, source_of, leaks, cv)
