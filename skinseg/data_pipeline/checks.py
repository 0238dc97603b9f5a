"""Decode every pair once to find what names alone cannot show: corrupt files, size mismatches."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from skinseg.core.errors import DataError, ImageReadError
from skinseg.data_pipeline.discovery import Pair, Problem
from skinseg.data_pipeline.image_io import read_image, read_mask


@dataclass(frozen=True)
class PairInfo:
    pair: Pair
    size: tuple[int, int]  # original (height, width), as displayed
    lesion_fraction: float
    digest: str  # of the decoded image: equal for copies of one image under any name or format


def image_digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=12).hexdigest()


def check_pair(
    pair: Pair, decode_size: tuple[int, int] | None = None
) -> tuple[PairInfo | None, list[Problem]]:
    """Decode one pair. Returns its info (None when unusable) and the problems found."""
    problems = []
    try:
        image = read_image(pair.image, min_size=decode_size)
        problems += [Problem(pair.image, note, "warning") for note in image.notes]
    except ImageReadError as err:
        problems.append(Problem(err.path, err.problem))
        image = None
    try:
        mask = read_mask(pair.mask)
        problems += [Problem(pair.mask, note, "warning") for note in mask.notes]
    except ImageReadError as err:
        problems.append(Problem(err.path, err.problem))
        mask = None
    if image is None or mask is None:
        return None, problems
    if image.original_size != mask.original_size:
        problems.append(Problem(pair.mask, size_mismatch(image, mask)))
        return None, problems
    fraction = float(mask.array.mean())
    if fraction == 0.0:
        problems.append(Problem(pair.mask, "empty mask (no lesion pixel)", "warning"))
    return PairInfo(pair, image.original_size, fraction, image_digest(image.array)), problems


def size_mismatch(image, mask) -> str:
    """What is wrong when a mask is not the size of its image, EXIF rotation included."""
    (ih, iw), (mh, mw) = image.original_size, mask.original_size
    message = f"mask is {mw}x{mh} but its image is {iw}x{ih}"
    if image.orientation >= 5 and (mh, mw) == (iw, ih):
        message += (
            f" as displayed (its EXIF orientation {image.orientation} turns the stored {ih}x{iw} "
            "pixels); masks must match the image as a viewer shows it"
        )
    return message


def check_pairs(
    pairs: list[Pair], decode_size: tuple[int, int] | None = None, workers: int | None = None
) -> tuple[list[PairInfo], list[Problem]]:
    """Check pairs in parallel (Pillow releases the GIL while decoding)."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: check_pair(p, decode_size), pairs))
    infos = [info for info, _ in results if info is not None]
    problems = [problem for _, found in results for problem in found]
    return infos, problems


def problem_lines(problems, limit=20) -> str:
    lines = [f"  {p.file}: {p.problem}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(
            f"  ... and {len(problems) - limit} more (python -m skinseg.data_pipeline inspect lists all)"
        )
    return "\n".join(lines)


def usable_pairs(
    pairs: list[Pair], name_problems, decode_size, skip_bad: bool, what: str
) -> tuple[list[PairInfo], list[Problem]]:
    """Decode-check `pairs`; stop on any unusable file unless `skip_bad`, which drops them.
    Returns the usable pairs' infos and the problems of those left out."""
    infos, problems = check_pairs(pairs, decode_size=decode_size)
    errors = [p for p in [*name_problems, *problems] if p.severity == "error"]
    if errors and not skip_bad:
        raise DataError(
            f"{len(errors)} problem(s) in the {what} data:\n{problem_lines(errors)}\n"
            "Fix or remove these files, or pass --skip-bad to leave them out"
        )
    if errors:
        logging.getLogger("skinseg").warning(
            "leaving out %d unusable file(s) (--skip-bad):\n%s", len(errors), problem_lines(errors)
        )
    return infos, errors
