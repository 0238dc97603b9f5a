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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--export", metavar="DIR", help="write a SavedModel and a TFLite file to DIR")
    return parser


def preprocessing_of(model_path: str):
    """The preprocessing the model was trained with: from the run's config.json beside it, or a
    preprocessing.json beside it; none when neither exists."""
    from data_pipeline.preprocess import Preprocessing

    folder = os.path.dirname(os.path.abspath(model_path))
    for name in ("config.json", "preprocessing.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return Preprocessing.from_json(json.load(handle))
    return Preprocessing()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs and not args.export:
        parser.error("give images or folders to segment (or --export DIR)")
    if args.inputs and not args.out:
        parser.error("--out DIR is required to write masks")
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stderr)
    from models.export import export
    from models.inference import ModelLoadError
    from models.predict import PredictError, predict_folder

    preprocessing = preprocessing_of(args.model)
    try:
        if args.export:
            paths = export(args.model, args.export, preprocessing)
            print(f"exported {paths['saved_model']} and {paths['tflite']}")
        if not args.inputs:
            return 0
        result = predict_folder(
            args.model,
            args.inputs,
            args.out,
            preprocessing=preprocessing,
            overlay=args.overlay,
            tta=args.tta,
            threshold=args.threshold,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            strict=args.strict,
        )
    except (PredictError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, problem in result.problems:
        print(f"skipped {path}: {problem}", file=sys.stderr)
    masks = (
        f"; {result.skipped_masks} ground-truth mask file(s) (*_segmentation) not segmented"
        if result.skipped_masks
        else ""
    )
    print(
        f"wrote {result.written} mask(s) to {args.out} in {result.seconds:.1f} s "
        f"({result.images_per_s:.1f} images/s); {result.skipped_existing} existing left alone, "
        f"{len(result.problems)} input(s) could not be read{masks}"
    )
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
