"""Segment new images with a saved model: masks at each image's original size, optional overlays."""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from skinseg.data_pipeline.errors import DataError
from skinseg.data_pipeline.image_io import IMAGE_SUFFIXES, read_image, read_mask, to_original, write_image
from skinseg.data_pipeline.preprocess import Preprocessing, prepare_image
from skinseg.evaluation.postprocess import PostProcessing
from skinseg.models.inference import Forward, input_size, load_segmenter, stream_predictions

log = logging.getLogger("skinseg")

# Data sets pair images with masks by IMAGE_SUFFIXES; single images may also come as TIFF or WebP
# (other clinics' exports).
PREDICT_SUFFIXES = (*IMAGE_SUFFIXES, ".tif", ".tiff", ".webp")

# Ground-truth masks that sit beside their images in ISIC downloads: ID_segmentation.png.
_MASK_STEM = re.compile(r"_segmentation$", re.I)


class PredictError(RuntimeError):
    pass


# The model shipped with the project: `--model pretrained` (see models/pretrained/MODEL_CARD.md).
PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", "skinseg-isic.keras")


@dataclass(frozen=True)
class SavedSegmenter:
    """A saved network with what turns an image into its input and its output into a mask."""

    path: str
    preprocessing: Preprocessing = Preprocessing()
    post: PostProcessing = PostProcessing()


def _beside(path: str, name: str) -> dict | None:
    from skinseg.data_pipeline.atomic import read_json

    beside = os.path.join(os.path.dirname(path), name)
    if not os.path.exists(beside):
        return None
    try:
        data = read_json(beside)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as err:
        raise PredictError(f"{beside}: unreadable ({err})") from None


def resolve_model(path: str) -> SavedSegmenter:
    """A saved network, the preprocessing it was trained with and the post-processing chosen for
    it: from a run folder (its best.keras), a .keras file inside one, a .keras file with
    preprocessing.json / postprocess.json beside it, or `pretrained` (the shipped model)."""
    from skinseg.run_folder import RunFolder
    from skinseg.training.config import ConfigError

    if path == "pretrained" and not os.path.exists(path):  # a file or folder of that name wins
        if not os.path.exists(PRETRAINED):
            raise PredictError(f"{PRETRAINED}: the shipped model is missing from this installation")
        path = PRETRAINED
    path = os.path.abspath(path)
    run = RunFolder(path if os.path.isdir(path) else os.path.dirname(path))
    if os.path.isdir(path) and not run.has_config():
        hint = (
            f" (it hides the shipped model: rename it, or give {PRETRAINED})"
            if os.path.basename(path) == "pretrained"
            else ""
        )
        raise PredictError(f"{path}: a folder, but not a run folder of train.py (no config.json){hint}")
    if run.has_config():
        try:
            config = run.read_config()
        except ConfigError as err:  # its preprocessing is unknown: guessing would change the masks
            raise PredictError(str(err)) from None
        if os.path.isdir(path):
            if not os.path.exists(run.best_network):
                raise PredictError(f"{run.best_network}: not written yet; the run has not completed an epoch")
            path = run.best_network
        post = run.read_postprocess() if path == run.best_network else None
        if post is None:
            log.warning(
                "%s: no post-processing chosen for this network; threshold 0.5 (evaluate.py --run %s "
                "chooses one on the validation split)",
                path,
                run.path,
            )
        return SavedSegmenter(path, config.preprocessing, post or PostProcessing())
    try:
        pre = _beside(path, "preprocessing.json")
        post = _beside(path, "postprocess.json")
        return SavedSegmenter(
            path,
            Preprocessing.from_json(pre) if pre else Preprocessing(),
            PostProcessing.from_json(post, os.path.join(os.path.dirname(path), "postprocess.json"))
            if post
            else PostProcessing(),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise PredictError(
            f"{os.path.dirname(path)}: unreadable preprocessing or post-processing ({err})"
        ) from None


@dataclass
class PredictResult:
    written: int = 0
    skipped_existing: int = 0
    skipped_masks: int = 0  # inputs named like ground-truth masks (ID_segmentation.png)
    other_files: list[str] = field(default_factory=list)  # files in input folders that are not images
    overlays_drawn: int = 0  # overlays drawn for masks that were kept
    overlay_problems: list[tuple[str, str]] = field(default_factory=list)  # kept masks left without one
    stale_overlays: int = 0  # overlays of an earlier run whose masks were written anew without --overlay
    problems: list[tuple[str, str]] = field(default_factory=list)  # (input, why it was not segmented)
    seconds: float = 0.0
    first_batch_seconds: float = 0.0  # start-up: loading, tracing and the first batch

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


def predict_folder(
    model_path: str,
    inputs: list[str],
    out: str,
    *,
    preprocessing: Preprocessing = Preprocessing(),
    overlay: bool = False,
    tta: bool = False,
    post: PostProcessing | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    strict: bool = False,
) -> PredictResult:
    """Writes OUT/STEM.png (0/255) for every input image, and OUT/overlays/STEM.jpg with
    `overlay`. Streams: memory holds two batches of decoded images (full size with `overlay`),
    whatever the number of inputs. An existing mask is left as it is without `overwrite`; its
    missing overlay is still drawn, from that mask. What to write is settled before the model
    loads: no image found, or (with `strict`) a missing input or a clash of names, stops there,
    and --out is not created."""
    from skinseg.metrics.figures import overlay as draw_overlay

    def write_overlay(path: str, image: np.ndarray, mask: np.ndarray) -> None:
        write_image(path, draw_overlay(image, np.zeros_like(mask), mask), quality=90)

    post = post or PostProcessing()

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
    model = load_segmenter(model_path)
    size = input_size(model)
    os.makedirs(out, exist_ok=True)
    if overlay:
        os.makedirs(overlays, exist_ok=True)

    def no_overlay(path: str, why: str) -> None:
        if strict:
            raise PredictError(f"{path}: {why}")
        result.overlay_problems.append((path, why))

    for path, target, drawn in redraw:
        try:
            image = read_image(path).array
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
        write_overlay(drawn, image, mask)
        result.overlays_drawn += 1

    def load(item):
        drawn = item[2] is not None
        decoded = read_image(item[0], min_size=None if drawn else size)
        extra = (decoded.original_size, decoded.covers, decoded.array if drawn else None)
        return prepare_image(decoded.array, size, preprocessing), extra

    def finish(item, prob, original_size, covers, image) -> None:
        """Mask (and overlay) of one image, at its original size."""
        _, target, drawn = item
        mask = post.apply(to_original(prob, original_size, covers, preprocessing.fit))
        write_image(target, mask.astype(np.uint8) * 255)
        if drawn:
            write_overlay(drawn, image, mask)

    start = last_report = time.perf_counter()
    forward = Forward(model)  # traced on its first batch
    # Resizing back, clean-up and PNG encoding run in a thread beside the model (they release the
    # GIL), a bounded number of images behind it; a failed write is raised here, in order.
    with ThreadPoolExecutor(1) as writer:
        behind: deque = deque()

        def collect(limit: int) -> None:
            while len(behind) > limit:
                behind.popleft().result()
                result.written += 1

        for item, prob, extra in stream_predictions(forward, todo, load, batch_size=batch_size, tta=tta):
            if prob is None:
                if strict:
                    raise PredictError(str(extra))
                problems.append((item[0], getattr(extra, "problem", str(extra))))
                continue
            if not result.first_batch_seconds:
                result.first_batch_seconds = time.perf_counter() - start
            behind.append(writer.submit(finish, item, prob, *extra))
            collect(2 * batch_size)
            if time.perf_counter() - last_report > 30:  # a sign of life on long runs
                last_report = time.perf_counter()
                log.info("%d of %d image(s) segmented", result.written, len(todo))
        collect(0)
    result.seconds = time.perf_counter() - start
    return result
