"""Segment new images with a saved model; masks are written at each image's original size.

python predict.py --model pretrained photos/ --out masks/       # the shipped model, no training
python predict.py --model runs/baseline photos/ extra.jpg --out masks/
python predict.py --model runs/baseline/best.keras photos/ --out masks/ --overlay --tta
python predict.py --model runs/baseline --export exported/     # SavedModel + TFLite
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
        metavar="RUN|FILE|pretrained",
        help="a run folder (its best.keras), a saved .keras model, or pretrained (the model shipped "
        "with the project, trained on 2,494 ISIC training pairs; see skinseg/models/pretrained/MODEL_CARD.md; a "
        "file or folder named pretrained here takes precedence)",
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
    parser.add_argument("--export", metavar="DIR", help="write a SavedModel and a TFLite file to DIR")
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


def _run(args) -> int:
    from skinseg.inference import predict_folder
    from skinseg.inference.description import describe

    # What to write is settled (and refused) before TensorFlow and the model load.
    work = (
        predict_folder.plan(
            args.inputs, args.out, overlay=args.overlay, overwrite=args.overwrite, strict=args.strict
        )
        if args.inputs
        else None
    )
    described = describe(args.model, read_post=args.threshold is None)
    import_tensorflow()
    from skinseg.inference.export import export
    from skinseg.inference.postprocess import PostProcessing
    from skinseg.inference.segmenter import Segmenter

    post = None if args.threshold is None else PostProcessing(threshold=args.threshold)
    segmenter = Segmenter.from_described(described, post=post, tta=args.tta)
    if args.export:
        if args.tta:
            log.warning("--tta is not part of an export: its graphs run the network once per image")
        paths = export(segmenter, args.export, overwrite=args.overwrite)
        print(f"exported {paths['saved_model']} and {paths['tflite']}")
    if work is None:
        return 0
    result = predict_folder.write_masks(segmenter, work, batch_size=args.batch_size)
    for path, problem in result.problems:
        print(f"skipped {path}: {problem}", file=sys.stderr)
    for path, problem in result.overlay_problems:
        print(f"no overlay for {path}: {problem}", file=sys.stderr)
    notes = []
    if result.overlays_drawn:
        notes.append(f"{result.overlays_drawn} missing overlay(s) drawn from the kept masks")
    if result.overlay_problems:
        notes.append(f"{len(result.overlay_problems)} kept mask(s) left without an overlay (listed above)")
    if result.skipped_masks:
        notes.append(f"{result.skipped_masks} ground-truth mask file(s) (*_segmentation) not segmented")
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
