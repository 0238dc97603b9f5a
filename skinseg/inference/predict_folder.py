"""Segment new images with a saved model: masks at each image's original size, optional overlays."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from skinseg.core.atomic import write_text
from skinseg.core.errors import DataError, is_out_of_memory, memory_problem
from skinseg.core.faults import fault_point
from skinseg.data_pipeline.image_io import IMAGE_SUFFIXES, read_mask, write_image
from skinseg.inference.description import PredictError
from skinseg.inference.overlay import mark_for_review
from skinseg.inference.overlay import overlay as draw_overlay
from skinseg.inference.quality import MaskQuality, assess

if TYPE_CHECKING:  # TensorFlow loads only once a plan stands (predict.py checks its inputs first)
    from skinseg.inference.segmenter import Segmenter

log = logging.getLogger("skinseg")

# Data sets pair images with masks by IMAGE_SUFFIXES; single images may also come as TIFF or WebP
# (other clinics' exports).
PREDICT_SUFFIXES = (*IMAGE_SUFFIXES, ".tif", ".tiff", ".webp")

# Ground-truth masks that sit beside their images in ISIC downloads: ID_segmentation.png.
_MASK_STEM = re.compile(r"_segmentation$", re.I)

__all__ = [
    "PREDICT_SUFFIXES",
    "Plan",
    "PredictError",
    "PredictResult",
    "list_inputs",
    "plan",
    "predict_folder",
    "write_masks",
]


@dataclass
class PredictResult:
    written: int = 0
    skipped_existing: int = 0
    skipped_masks: int = 0  # inputs named like ground-truth masks (ID_segmentation.png)
    other_files: list[str] = field(default_factory=list)  # files in input folders that are not images
    overlays_drawn: int = 0  # overlays drawn for masks that were kept
    overlay_problems: list[tuple[str, str]] = field(default_factory=list)  # masks left without an overlay
    stale_overlays: int = 0  # overlays of an earlier run whose masks were written anew without --overlay
    qualities: list = field(default_factory=list)  # (image, mask written, quality.MaskQuality)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (input, why it was not segmented)
    removed: list[str] = field(default_factory=list)  # masks of an earlier run whose input failed now
    seconds: float = 0.0
    first_batch_seconds: float = 0.0  # tracing and the first batch (loading and folding come before)

    @property
    def flagged(self) -> int:
        return sum(quality.flagged for _, _, quality in self.qualities)

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


def list_inputs(inputs: list[str]) -> tuple[list[str], int, list[tuple[str, str]], list[str]]:
    """Image files from files and folders (not recursive; a path given twice counts once), the
    number of mask files left out, the inputs that do not exist, and the files in the folders
    that are not images of a known suffix."""
    files, masks, problems, others, seen = [], 0, [], [], set()

    def add(path: str) -> None:
        # The same name given twice (photos/a.jpg and ./photos/a.jpg); a link is another name.
        if os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            files.append(path)

    for item in inputs:
        if os.path.isdir(item):
            if os.path.isfile(os.path.join(item, "config.json")) and os.path.isfile(
                os.path.join(item, "best.keras")
            ):
                raise PredictError(
                    f"{item}: a run folder given as images (its curves.png would be segmented); for an "
                    "ensemble repeat --model (--model RUN1 --model RUN2)"
                )
            if os.path.abspath(item) in seen:
                continue
            seen.add(os.path.abspath(item))
            for name in sorted(os.listdir(item)):
                stem, ext = os.path.splitext(name)
                if name.startswith("."):
                    continue
                if ext.lower() not in PREDICT_SUFFIXES:
                    if os.path.isfile(os.path.join(item, name)):
                        others.append(os.path.join(item, name))
                    continue
                if _MASK_STEM.search(stem):
                    masks += 1
                    continue
                add(os.path.join(item, name))
        elif os.path.exists(item) or os.path.islink(item):
            add(item)
        else:
            problems.append((item, "no such file or folder"))
    return files, masks, problems, others


@dataclass
class Plan:
    """What a prediction will write, settled before any model loads."""

    out: str
    todo: list[tuple[str, str, str | None]]  # (image, mask to write, overlay to write or None)
    redraw: list[tuple[str, str, str]]  # (image, kept mask, missing overlay drawn from it)
    result: PredictResult
    overlay: bool
    strict: bool


def plan(
    inputs: list[str], out: str, *, overlay: bool = False, overwrite: bool = False, strict: bool = False
) -> Plan:
    """OUT/STEM.png (0/255) for every input image, and OUT/overlays/STEM.jpg with `overlay`. An
    existing mask is left as it is without `overwrite`; its missing overlay is still drawn, from
    that mask. No image found, or (with `strict`) a missing input or a clash of names, stops here,
    before the model loads, and --out is not created."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise PredictError(f"{out}: --out is a file; it must be a folder for the masks")
    overlays = os.path.join(out, "overlays")
    for item in inputs:
        for kind, folder in (("--out", out), ("--out/overlays", overlays)):
            if os.path.isdir(item) and os.path.realpath(item) == os.path.realpath(folder):
                raise PredictError(
                    f"{folder}: {kind} is also an input folder; the masks would replace or mix with its "
                    "images. Choose another folder"
                )
    files, masks, problems, others = list_inputs(inputs)
    result = PredictResult(skipped_masks=masks, problems=problems, other_files=others)
    if not files:
        found = []
        if masks:
            found.append(f"{masks} file(s) named like ground-truth masks, *_segmentation, left out")
        if others:
            found.append(f"{len(others)} file(s) of other types, e.g. {os.path.basename(others[0])}")
        found += [f"{path}: {why}" for path, why in problems]
        raise PredictError(
            f"no images ({', '.join(suffix.lstrip('.').upper() for suffix in PREDICT_SUFFIXES)}) in "
            f"{', '.join(inputs)}" + (f" ({'; '.join(found)})" if found else "")
        )
    owners: dict[str, str] = {}
    todo, redraw = [], []
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(out, f"{stem}.png")
        drawn = os.path.join(overlays, f"{stem}.jpg")
        if stem in owners:
            problems.append(
                (path, f"{owners[stem]} has the same stem, {stem}; its mask would overwrite this one")
            )
            continue
        written = [target, drawn] if overlay else [target]
        if os.path.realpath(path) in map(os.path.realpath, written):
            problems.append((path, "its mask or overlay would be written over it (it is in --out)"))
            continue
        owners[stem] = path
        if os.path.exists(target) and not overwrite:
            result.skipped_existing += 1
            if overlay and not os.path.exists(drawn):
                redraw.append((path, target, drawn))  # from the kept mask, not a new prediction
            continue
        if not overlay and os.path.exists(drawn):
            result.stale_overlays += 1
        todo.append((path, target, drawn if overlay else None))
    if strict and problems:
        raise PredictError(f"{problems[0][0]}: {problems[0][1]}")
    if result.skipped_existing:
        log.info(
            "%d mask(s) already in %s left as they are (--overwrite replaces them)",
            result.skipped_existing,
            out,
        )
    if result.stale_overlays:
        log.warning(
            "%d overlay(s) in %s will be older than their new masks (--overlay redraws them)",
            result.stale_overlays,
            overlays,
        )
    return Plan(out, todo, redraw, result, overlay, strict)


def _write_overlay(
    path: str, image: np.ndarray, mask: np.ndarray, quality: MaskQuality | None = None
) -> None:
    drawn = draw_overlay(image, np.zeros_like(mask), mask)
    if quality is not None and quality.flagged:
        drawn = mark_for_review(drawn, quality.confidence)
    write_image(path, drawn, quality=90)


def _redraw_overlays(segmenter: Segmenter, work: Plan) -> None:
    """Missing overlays of kept masks, drawn from those masks (not from a new prediction)."""
    result = work.result

    def no_overlay(path: str, why: str) -> None:
        if work.strict:
            raise PredictError(f"{path}: {why}")
        result.overlay_problems.append((path, why))

    for path, target, drawn in work.redraw:
        try:
            image = segmenter.read(path, full=True).array
        except DataError as err:
            no_overlay(path, getattr(err, "problem", str(err)))
            continue
        try:
            mask = read_mask(target).array
        except DataError as err:
            no_overlay(path, f"its kept mask {target}: {getattr(err, 'problem', str(err))}")
            continue
        if mask.shape != image.shape[:2]:
            no_overlay(
                path,
                f"its kept mask {target} is {mask.shape[1]}x{mask.shape[0]}, the image "
                f"{image.shape[1]}x{image.shape[0]} (--overwrite segments it again)",
            )
            continue
        _write_overlay(drawn, image, mask)
        result.overlays_drawn += 1


def write_masks(segmenter: Segmenter, work: Plan, *, batch_size: int = 8) -> PredictResult:
    """Segments what `work` (from `plan`) lists and writes the masks (and overlays). Streams:
    memory holds two batches of decoded images (full size with overlays), whatever the number
    of inputs."""
    result = work.result
    os.makedirs(work.out, exist_ok=True)
    if work.overlay:
        os.makedirs(os.path.join(work.out, "overlays"), exist_ok=True)
    _redraw_overlays(segmenter, work)

    def load(item):
        decoded = segmenter.read(item[0], full=item[2] is not None)
        return decoded, decoded.array if item[2] is not None else None

    def finish(item, prediction, image) -> bool:
        """Mask (and overlay) of one image, at its original size, and its quality row. An image
        whose mask at full size does not fit in the memory left is listed as not segmented (or,
        with --strict, stops the run), and the others go on. False: not written."""
        source, target, drawn = item

        def out_of_memory(err, size, what: str, problems: list) -> None:
            if not is_out_of_memory(err):
                raise err
            why = memory_problem(*size, what)
            if work.strict:
                raise PredictError(f"{source}: {why}") from None
            problems.append((source, why + _remove_stale(item, result)))

        try:
            mask = prediction.mask
            quality = assess(prediction, mask)
            write_image(target, mask.astype(np.uint8) * 255)
        except (MemoryError, cv2.error) as err:
            out_of_memory(
                err, prediction.original_size, "resize its mask to the image's size", result.problems
            )
            return False
        result.qualities.append((source, target, quality))
        if drawn:
            try:
                _write_overlay(drawn, image, mask, quality)
            except (MemoryError, cv2.error) as err:
                out_of_memory(err, mask.shape, "draw its overlay", result.overlay_problems)
        return True

    start = time.perf_counter()
    try:
        _segment_all(segmenter, work, result, load, finish, batch_size, start)
    finally:  # an interrupted run still lists the masks it wrote
        if result.qualities or result.removed:
            write_predictions_csv(work.out, result.qualities, result.removed)
    result.seconds = time.perf_counter() - start
    return result


def _segment_all(segmenter, work, result, load, finish, batch_size: int, start: float) -> None:
    """The stream of predictions, each finished (mask, overlay, quality) by a writer thread."""
    last_report = start
    # Resizing back, clean-up and PNG encoding run in a thread beside the model (they release the
    # GIL), a bounded number of images behind it; a failed write is raised here, in order.
    with ThreadPoolExecutor(1) as writer:
        behind: deque = deque()

        def collect(limit: int) -> None:
            while len(behind) > limit:
                if behind.popleft().result():  # False: listed among the problems
                    result.written += 1
                fault_point("predict.mask_written")

        for item, prediction, extra in segmenter.stream(work.todo, load, batch_size=batch_size):
            if prediction is None:
                if work.strict:
                    raise PredictError(str(extra))
                why = getattr(extra, "problem", str(extra))
                result.problems.append((item[0], why + _remove_stale(item, result)))
                continue
            if not result.first_batch_seconds:
                result.first_batch_seconds = time.perf_counter() - start
            behind.append(writer.submit(finish, item, prediction, extra))
            collect(2 * batch_size)
            if time.perf_counter() - last_report > 30:  # a sign of life on long runs
                last_report = time.perf_counter()
                log.info("%d of %d image(s) segmented", result.written, len(work.todo))
        collect(0)


def _remove_stale(item, result: PredictResult) -> str:
    """An input that could not be segmented now, whose mask (and overlay) from an earlier run are
    in OUT (only with --overwrite: otherwise it would not be segmented again): they are removed, so
    that OUT, its record and predictions.csv hold this run's results only. The note for its line."""
    _, target, drawn = item
    gone = [path for path in (target, drawn) if path and os.path.lexists(path)]
    for path in gone:
        os.remove(path)
    if not gone:
        return ""
    if target in gone:
        result.removed.append(os.path.basename(target))
    return f" (from an earlier run, {' and '.join(gone)} removed)"


PREDICTIONS_CSV = "predictions.csv"


def write_predictions_csv(out: str, qualities, removed=()) -> str:
    """OUT/predictions.csv: a row per mask (image, mask, area fraction, touches the border,
    components, confidence, flagged), the rows of masks written now replacing their earlier ones,
    those of `removed` masks gone."""
    path = os.path.join(out, PREDICTIONS_CSV)
    rows = {}
    if os.path.exists(path):
        try:
            with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
                rows = {row["mask"]: row for row in csv.DictReader(handle) if "mask" in row}
        except (OSError, csv.Error):
            rows = {}  # rewritten whole below
    for name in removed:
        rows.pop(_as_written(name), None)
    for source, target, quality in qualities:
        # The file is UTF-8: a name that is not (a surrogate escape here) is written escaped, as
        # `caf\udce9.png`, and keyed so, so that a later run replaces its row instead of adding one.
        mask = _as_written(os.path.basename(target))
        rows[mask] = {"image": _as_written(source), "mask": mask, **quality.row()}
    buffer = io.StringIO()
    fields = ["image", "mask", "area_fraction", "touches_border", "components", "confidence", "flagged"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow(rows[name])
    write_text(path, buffer.getvalue())
    return path


def _as_written(name: str) -> str:
    """`name` as write_text writes it (UTF-8, backslash escapes for what is not)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def predict_folder(
    model: Segmenter | str,
    inputs: list[str],
    out: str,
    *,
    overlay: bool = False,
    batch_size: int = 8,
    overwrite: bool = False,
    strict: bool = False,
) -> PredictResult:
    """`plan`, then `write_masks`: the whole of `predict.py --model MODEL INPUTS --out OUT`.
    `model`: a Segmenter, or what Segmenter.load takes (loaded only once the plan stands)."""
    from skinseg.inference.segmenter import Segmenter

    work = plan(inputs, out, overlay=overlay, overwrite=overwrite, strict=strict)
    segmenter = model if isinstance(model, Segmenter) else Segmenter.load(model)
    return write_masks(segmenter, work, batch_size=batch_size)
