"""Segment new images with a saved model: masks at each image's original size, optional overlays."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from skinseg.data_pipeline.image_io import IMAGE_SUFFIXES, read_image, to_original, write_image
from skinseg.data_pipeline.preprocess import Preprocessing, prepare_image
from skinseg.models.inference import Forward, input_size, load_segmenter, stream_predictions

log = logging.getLogger("skinseg")

# Ground-truth masks that sit beside their images in ISIC downloads: ID_segmentation.png.
_MASK_STEM = re.compile(r"_segmentation$", re.I)


class PredictError(RuntimeError):
    pass


def resolve_model(path: str) -> tuple[str, Preprocessing]:
    """A saved network and the preprocessing it was trained with, from a run folder (its
    best.keras), a .keras file inside one, or a .keras file with a preprocessing.json beside it."""
    from skinseg.run_folder import RunFolder

    path = os.path.abspath(path)
    if os.path.isdir(path):
        run = RunFolder(path)
        if not run.is_run():
            raise PredictError(f"{path}: a folder, but not a run folder of train.py (no config.json)")
        if not os.path.exists(run.best_network):
            raise PredictError(f"{run.best_network}: not written yet; the run has not completed an epoch")
        return run.best_network, run.read_config().preprocessing
    run = RunFolder(os.path.dirname(path))
    if run.is_run():
        return path, run.read_config().preprocessing
    beside = os.path.join(os.path.dirname(path), "preprocessing.json")
    if os.path.exists(beside):
        import json

        try:
            with open(beside, encoding="utf-8") as handle:
                return path, Preprocessing.from_json(json.load(handle))
        except (OSError, ValueError, AttributeError) as err:
            raise PredictError(f"{beside}: unreadable ({err})") from None
    return path, Preprocessing()


@dataclass
class PredictResult:
    written: int = 0
    skipped_existing: int = 0
    skipped_masks: int = 0  # inputs named like ground-truth masks (ID_segmentation.png)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (input, why it was not segmented)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


def list_inputs(inputs: list[str]) -> tuple[list[str], int, list[tuple[str, str]]]:
    """Image files from files and folders (not recursive), the number of mask files left out, and
    the inputs that do not exist."""
    files, masks, problems = [], 0, []
    for item in inputs:
        if os.path.isdir(item):
            for name in sorted(os.listdir(item)):
                stem, ext = os.path.splitext(name)
                if name.startswith(".") or ext.lower() not in IMAGE_SUFFIXES:
                    continue
                if _MASK_STEM.search(stem):
                    masks += 1
                    continue
                files.append(os.path.join(item, name))
        elif os.path.exists(item) or os.path.islink(item):
            files.append(item)
        else:
            problems.append((item, "no such file or folder"))
    return files, masks, problems


def predict_folder(
    model_path: str,
    inputs: list[str],
    out: str,
    *,
    preprocessing: Preprocessing = Preprocessing(),
    overlay: bool = False,
    tta: bool = False,
    threshold: float = 0.5,
    batch_size: int = 8,
    overwrite: bool = False,
    strict: bool = False,
) -> PredictResult:
    """Writes OUT/STEM.png (0/255) for every input image, and OUT/overlays/STEM.jpg with
    `overlay`. Streams: memory holds two batches of decoded images (full size with `overlay`),
    whatever the number of inputs. An existing mask is left as it is without `overwrite`; its
    missing overlay is still drawn."""
    from skinseg.metrics.figures import overlay as draw_overlay

    model = load_segmenter(model_path)
    size = input_size(model)
    files, masks, problems = list_inputs(inputs)
    result = PredictResult(skipped_masks=masks, problems=problems)
    if not files and not problems:
        raise PredictError(f"no images (JPEG, PNG, BMP) in {', '.join(inputs)}")
    os.makedirs(out, exist_ok=True)
    overlays = os.path.join(out, "overlays")
    if overlay:
        os.makedirs(overlays, exist_ok=True)
    stems, todo = set(), []
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(out, f"{stem}.png")
        drawn = os.path.join(overlays, f"{stem}.jpg")
        if stem in stems:
            problems.append((path, f"another input has the stem {stem}; its mask would overwrite this one"))
            continue
        stems.add(stem)
        keep_mask = os.path.exists(target) and not overwrite
        if keep_mask:
            result.skipped_existing += 1
            if not (overlay and not os.path.exists(drawn)):
                continue
        todo.append((path, None if keep_mask else target, drawn if overlay else None))
    if result.skipped_existing:
        log.info(
            "%d mask(s) already in %s left as they are (--overwrite replaces them)",
            result.skipped_existing,
            out,
        )
    if strict and problems:
        raise PredictError(f"{problems[0][0]}: {problems[0][1]}")

    def load(item):
        decoded = read_image(item[0], min_size=None if overlay else size)
        extra = (decoded.original_size, decoded.covers, decoded.array if overlay else None)
        return prepare_image(decoded.array, size, preprocessing), extra

    start = time.perf_counter()
    forward = Forward(model)
    for (path, target, drawn), prob, extra in stream_predictions(
        forward, todo, load, batch_size=batch_size, tta=tta
    ):
        if prob is None:
            if strict:
                raise PredictError(str(extra))
            problems.append((path, getattr(extra, "problem", str(extra))))
            continue
        original_size, covers, image = extra
        mask = to_original(prob, original_size, covers) > threshold
        if target:
            write_image(target, mask.astype(np.uint8) * 255)
            result.written += 1
        if drawn:
            write_image(drawn, draw_overlay(image, np.zeros_like(mask), mask), quality=90)
    result.seconds = time.perf_counter() - start
    return result
