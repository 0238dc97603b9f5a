"""Segment new images with a saved model; masks are written at each image's original size.

python predict.py --model pretrained photos/ --out masks/       # the shipped model, no training
python predict.py --model runs/baseline photos/ extra.jpg --out masks/
python predict.py --model runs/baseline/best.keras photos/ --out masks/ --overlay --tta
python predict.py --model runs/baseline --export exported/     # SavedModel + TFLite + .keras
python predict.py --model runs/a --model runs/b --export ens/   # an ensemble, as one model
python predict.py --model runs/cv5-f0 --model runs/cv5-f1 --model runs/cv5-f2 photos/ --out masks/  # ensemble
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from skinseg.cli import exit_codes, import_tensorflow, positive_int, probability, setup_logging

log = logging.getLogger("skinseg")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        metavar="RUN|FILE|pretrained",
        help="a run folder (its best.keras), a saved .keras model, or pretrained (the model shipped "
        "with the project, trained on 2,494 ISIC training pairs; see skinseg/models/pretrained/MODEL_CARD.md; a "
        "file or folder named pretrained here takes precedence); repeat --model for an ensemble that "
        "averages their probabilities (threshold 0.5 unless --threshold)",
    )
    parser.add_argument("inputs", nargs="*", help="image files and/or folders of images")
    parser.add_argument(
        "--out", metavar="DIR", help="folder for the masks (PNG, 0/255, same stem as the image)"
    )
    parser.add_argument("--overlay", action="store_true", help="also write overlays to OUT/overlays/")
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument(
        "--threshold",
        type=probability,
        metavar="X",
        help="fixed probability threshold, no clean-up (default: the threshold and clean-up chosen on "
        "the model's validation split, postprocess.json; 0.5 when there is none)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N", help="(default: %(default)s)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace masks that already exist in OUT (and an existing --export)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable input")
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        help="decode images of up to N pixels (default: Pillow's decompression-bomb guard, 89,478,485, "
        "about 11000x8000; a larger image is skipped with a message)",
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="write a SavedModel, a TFLite file and a Keras file to DIR (an ensemble: one model "
        "averaging its members)",
    )
    return parser


@exit_codes
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs and not args.export:
        parser.error("give images or folders to segment (or --export DIR)")
    if args.inputs and not args.out:
        parser.error("--out DIR is required to write masks")
    setup_logging()
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        if args.max_pixels:
            Image.MAX_IMAGE_PIXELS = args.max_pixels
        return _run(args)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


RECORD = ".skinseg-predict.json"  # in --out: what made its masks


def _same_options(args, described, work) -> dict | None:
    """Every mask in --out must come from the same models and options: OUT/.skinseg-predict.json
    records them. Masks already in OUT made otherwise (or by an unknown run) are refused, unless
    --overwrite replaces every one of them in this call. Returns the record, written (_run) before
    the first mask, so that a killed run leaves a record that describes the masks it wrote."""
    from skinseg.core.atomic import read_json
    from skinseg.core.run_folder import file_digest
    from skinseg.inference.description import PredictError

    record = {
        "models": sorted(
            ({"path": d.path, "sha256": file_digest(d.path)} for d in described), key=lambda m: m["sha256"]
        ),
        "tta": args.tta,
        "mask step": f"threshold {args.threshold:g}, no clean-up"
        if args.threshold is not None
        else (described[0].post.describe() if len(described) == 1 else "threshold 0.5, no clean-up"),
    }
    if not os.path.isdir(args.out):
        return record
    present = {name for name in os.listdir(args.out) if name.lower().endswith(".png")}
    if not present:
        return record
    path = os.path.join(args.out, RECORD)
    try:
        before = read_json(path) if os.path.exists(path) else None
    except (OSError, ValueError):
        before = None

    def identity(r):
        if not isinstance(r, dict):
            return None
        models = sorted(m.get("sha256", "") for m in r.get("models", []) if isinstance(m, dict))
        return models, r.get("tta"), r.get("mask step")

    if identity(before) == identity(record):
        return record
    if before is None and not os.path.exists(path):
        # Masks from an earlier version or another tool: their options cannot be checked. They
        # are kept as before, said loudly, and no record vouches for the mixed folder.
        log.warning(
            "%s: holds %d mask(s) with no record of the models and options that made them (%s); "
            "the ones kept cannot be checked against this run's",
            args.out,
            len(present),
            RECORD,
        )
        return None
    rewritten = {os.path.basename(target) for _, target, _ in work.todo}
    kept = present - rewritten if args.overwrite else present
    if kept:
        made = (
            f"{', '.join(m.get('path', '?') for m in before.get('models', []))}, tta {before.get('tta')}, "
            f"{before.get('mask step')}"
            if isinstance(before, dict)
            else "unknown models or options: no record of them"
        )
        how = (
            f"--overwrite replaces only this call's masks, and {len(kept)} would stay"
            if args.overwrite
            else "pass --overwrite to replace them"
        )
        raise PredictError(
            f"{args.out}: holds {len(kept)} mask(s) made with other models or options ({made}); now: "
            f"{', '.join(m['path'] for m in record['models'])}, tta {args.tta}, {record['mask step']}. "
            f"Masks of two runs would mix: {how}, or choose another --out"
        )
    return record


def _run(args) -> int:
    import contextlib

    from skinseg.core.locking import FolderLock
    from skinseg.inference import predict_folder
    from skinseg.inference.description import PredictError

    def planned():
        return predict_folder.plan(
            args.inputs, args.out, overlay=args.overlay, overwrite=args.overwrite, strict=args.strict
        )

    # What to write is settled (and refused) before TensorFlow and the model load, and before
    # --out exists; then the folder is locked (one writer) and planned again, as it is now.
    if not args.inputs:
        return _predict(args, None)
    planned()
    with FolderLock(args.out, "masks (predict.py)", PredictError) if args.out else contextlib.nullcontext():
        return _predict(args, planned())


def _predict(args, work) -> int:
    from skinseg.inference import predict_folder
    from skinseg.inference.description import describe

    ensemble = len(args.model) > 1
    described = [describe(model, read_post=args.threshold is None and not ensemble) for model in args.model]
    record = _same_options(args, described, work) if work is not None else None
    import_tensorflow()
    from skinseg.inference.export import export
    from skinseg.inference.postprocess import PostProcessing
    from skinseg.inference.segmenter import Segmenter

    post = None if args.threshold is None else PostProcessing(threshold=args.threshold)
    if ensemble:
        members = [Segmenter.from_described(d, post=PostProcessing()) for d in described]
        segmenter = Segmenter.ensemble(members, post=post, tta=args.tta)
        log.info("an ensemble of %d models; mask step: %s", len(members), segmenter.post.describe())
    else:
        segmenter = Segmenter.from_described(described[0], post=post, tta=args.tta)
    if args.export:
        if args.tta:
            log.warning("--tta is not part of an export: its graphs run the network once per image")
        same = bool(args.out) and os.path.realpath(args.export) == os.path.realpath(args.out)
        paths = export(
            segmenter, args.export, overwrite=args.overwrite, locked=same
        )  # --out's lock covers it
        print(f"exported {paths['saved_model']}, {paths['tflite']} and {paths['keras']}")
    if work is None:
        return 0
    from skinseg.core.atomic import write_json

    os.makedirs(args.out, exist_ok=True)
    if record is not None:
        write_json(os.path.join(args.out, RECORD), record)
    result = predict_folder.write_masks(segmenter, work, batch_size=args.batch_size)
    for path, problem in result.problems:
        print(f"skipped {path}: {problem}", file=sys.stderr)
    for path, problem in result.overlay_problems:
        print(f"no overlay for {path}: {problem}", file=sys.stderr)
    notes = []
    if result.overlays_drawn:
        notes.append(f"{result.overlays_drawn} missing overlay(s) drawn from the kept masks")
    if result.overlay_problems:
        notes.append(f"{len(result.overlay_problems)} mask(s) left without an overlay (listed above)")
    if result.skipped_masks:
        notes.append(f"{result.skipped_masks} ground-truth mask file(s) (*_segmentation) not segmented")
    if result.qualities:
        from skinseg.inference.quality import FLAG_BELOW

        notes.append(
            f"{result.flagged} of {len(result.qualities)} mask(s) flagged for review (confidence < "
            f"{FLAG_BELOW:g}; {os.path.join(args.out, predict_folder.PREDICTIONS_CSV)})"
        )
    if result.other_files:
        suffixes = sorted({os.path.splitext(p)[1].lower() or "(no suffix)" for p in result.other_files})
        notes.append(
            f"{len(result.other_files)} file(s) in the folders not images of a known type "
            f"({', '.join(suffixes)}), left out"
        )
    print(
        f"wrote {result.written} mask(s) to {args.out} in {result.seconds:.1f} s "
        f"({result.images_per_s:.1f} images/s); {result.skipped_existing} existing left alone, "
        f"{len(result.problems)} input(s) not segmented{' (listed above)' if result.problems else ''}"
        + "".join(f"; {note}" for note in notes)
    )
    return 1 if result.problems or result.overlay_problems else 0
