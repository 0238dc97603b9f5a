"""Segment new images with a saved model; masks are written at each image's original size.

python predict.py --model runs/baseline/best.keras photos/ extra.jpg --out masks/
python predict.py --model runs/baseline/best.keras photos/ --out masks/ --overlay --tta
python predict.py --model runs/baseline/best.keras --export exported/     # SavedModel + TFLite
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

log = logging.getLogger("skinseg")


class PredictError(RuntimeError):
    pass


def list_inputs(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files from files and folders (not recursive), and the inputs that are unusable."""
    from data_pipeline.image_io import IMAGE_SUFFIXES

    files, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            for name in sorted(os.listdir(item)):
                path = os.path.join(item, name)
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                    continue
                if "_segmentation" in name.lower():
                    continue  # ground-truth masks that sit beside their images
                files.append(path)
        elif os.path.exists(item) or os.path.islink(item):
            files.append(item)
        else:
            problems.append((item, "no such file or folder"))
    return files, problems


def preprocessing_of(model_path: str) -> dict:
    """The run's preprocessing (CLAHE), from the config.json beside the model, if any."""
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if os.path.exists(config):
        with open(config) as handle:
            return {"clahe": bool(json.load(handle).get("clahe", False))}
    return {"clahe": False}


def _decode(path: str, size, clahe: bool, keep_original: bool):
    """(model input, original (h, w), original image or None) for one file."""
    from data_pipeline.image_io import read_image
    from data_pipeline.tfdata import prepare_image

    decoded = read_image(path, min_size=None if keep_original else size)
    small = prepare_image(decoded.array, size, clahe)
    original = decoded.array if keep_original else None
    return small.astype(np.float32) / 255.0, decoded.original_size, original


def predict_folder(
    model_path: str,
    inputs: list[str],
    out: str,
    *,
    overlay=False,
    tta=False,
    threshold=0.5,
    batch_size=8,
    overwrite=False,
    strict=False,
    clahe=None,
) -> dict:
    """Streams batches through the model: memory holds one batch of decoded images (plus, with
    `overlay`, their full-size originals), whatever the number of inputs."""
    import cv2

    from data_pipeline.errors import ImageReadError
    from data_pipeline.image_io import write_image
    from metrics.figures import overlay as draw_overlay
    from models.inference import input_size, load_segmenter, predict_probabilities

    model = load_segmenter(model_path)
    size = input_size(model)
    clahe = preprocessing_of(model_path)["clahe"] if clahe is None else clahe
    files, problems = list_inputs(inputs)
    if not files and not problems:
        raise PredictError(f"no images (JPEG, PNG, BMP) in {', '.join(inputs)}")
    os.makedirs(out, exist_ok=True)
    if overlay:
        os.makedirs(os.path.join(out, "overlays"), exist_ok=True)
    stems, todo, skipped = set(), [], 0
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        target = os.path.join(out, f"{stem}.png")
        if stem in stems:
            problems.append((path, f"another input has the stem {stem}; its mask would overwrite this one"))
        elif os.path.exists(target) and not overwrite:
            skipped += 1
        else:
            stems.add(stem)
            todo.append((path, target))
    if skipped:
        log.info("%d mask(s) already in %s left as they are (--overwrite replaces them)", skipped, out)
    if strict and problems:
        raise PredictError(f"{problems[0][0]}: {problems[0][1]}")

    written, start = 0, time.perf_counter()
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        for first in range(0, len(todo), batch_size):
            chunk = todo[first : first + batch_size]
            decoded = list(pool.map(lambda item: _safe_decode(item[0], size, clahe, overlay), chunk))
            ready = []
            for (path, target), result in zip(chunk, decoded):
                if isinstance(result, ImageReadError):
                    if strict:
                        raise PredictError(str(result))
                    problems.append((path, result.problem))
                else:
                    ready.append((path, target, *result))
            if not ready:
                continue
            probs = predict_probabilities(model, np.stack([r[2] for r in ready]), tta)
            for (_path, target, _, (h, w), original), prob in zip(ready, probs):
                mask = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR) > threshold
                write_image(target, mask.astype(np.uint8) * 255)
                if overlay:
                    stem = os.path.splitext(os.path.basename(target))[0]
                    write_image(
                        os.path.join(out, "overlays", f"{stem}.jpg"),
                        draw_overlay(original, np.zeros_like(mask), mask),
                        quality=90,
                    )
                written += 1
    elapsed = time.perf_counter() - start
    return {
        "written": written,
        "skipped_existing": skipped,
        "failed": len(problems),
        "problems": problems,
        "seconds": elapsed,
        "images_per_s": written / elapsed if elapsed else 0.0,
    }


def _safe_decode(path, size, clahe, keep_original):
    from data_pipeline.errors import ImageReadError

    try:
        return _decode(path, size, clahe, keep_original)
    except ImageReadError as err:
        return err


def export(model_path: str, out: str) -> dict:
    """A TensorFlow SavedModel (`model.export`) and a float32 TFLite file; both take float32
    images in [0, 1] at the model's input size and return lesion probabilities."""
    import shutil
    import tempfile

    import tensorflow as tf

    from data_pipeline.atomic import atomic_path
    from models.inference import load_segmenter

    model = load_segmenter(model_path)
    os.makedirs(out, exist_ok=True)
    saved_model = os.path.join(out, "saved_model")
    staging = tempfile.mkdtemp(prefix=".saved_model-", dir=out)
    try:
        model.export(staging, format="tf_saved_model", verbose=False)
        if os.path.exists(saved_model):
            shutil.rmtree(saved_model)
        os.rename(staging, saved_model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tflite = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    tflite_path = os.path.join(out, "model.tflite")
    with atomic_path(tflite_path) as tmp, open(tmp, "wb") as handle:
        handle.write(tflite)
    return {"saved_model": saved_model, "tflite": tflite_path}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="a saved model, e.g. runs/NAME/best.keras")
    parser.add_argument("inputs", nargs="*", help="image files and/or folders of images")
    parser.add_argument("--out", help="folder for the masks (PNG, 0/255, same stem as the image)")
    parser.add_argument("--overlay", action="store_true", help="also write overlays to OUT/overlays/")
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument("--threshold", type=float, default=0.5, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace masks that already exist in OUT")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable input")
    parser.add_argument(
        "--clahe",
        choices=("auto", "on", "off"),
        default="auto",
        help="CLAHE preprocessing; auto: as the run was trained (default: %(default)s)",
    )
    parser.add_argument("--export", metavar="DIR", help="write a SavedModel and a TFLite file to DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    from models.inference import ModelLoadError

    try:
        if args.export:
            paths = export(args.model, args.export)
            print(f"exported {paths['saved_model']} and {paths['tflite']}")
        if not args.inputs:
            if args.export:
                return 0
            parser.error("give images or folders to segment (or --export DIR)")
        if not args.out:
            parser.error("--out DIR is required to write masks")
        clahe = None if args.clahe == "auto" else args.clahe == "on"
        stats = predict_folder(
            args.model,
            args.inputs,
            args.out,
            overlay=args.overlay,
            tta=args.tta,
            threshold=args.threshold,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            strict=args.strict,
            clahe=clahe,
        )
    except (PredictError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, problem in stats["problems"]:
        print(f"skipped {path}: {problem}", file=sys.stderr)
    print(
        f"wrote {stats['written']} mask(s) to {args.out} in {stats['seconds']:.1f} s "
        f"({stats['images_per_s']:.1f} images/s); {stats['skipped_existing']} existing left alone, "
        f"{stats['failed']} input(s) could not be read"
    )
    return 1 if stats["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
