"""Every preset with its parameters and forward GFLOPs, and the HarDNet68 checkpoint converter.

python -m skinseg.models summary [--image-size 128] [--max-filters none] [--json]
python -m skinseg.models convert-hardnet68 hardnet68.pth encoder.weights.h5
"""

from __future__ import annotations

import argparse
import json
import sys

from skinseg.cli import exit_codes, import_tensorflow
from skinseg.models.registry import DEFAULT_MAX_FILTERS


def summarize(
    image_size: int, names=None, max_filters=DEFAULT_MAX_FILTERS, backbone="resnet101"
) -> list[dict]:
    import keras

    from skinseg.models.complexity import count_params, forward_flops
    from skinseg.models.registry import PRESETS, build_model
    from skinseg.models.unet import level_filters

    rows = []
    for name in names or PRESETS:
        preset = PRESETS[name]
        model = build_model(name, image_size, max_filters=max_filters, backbone=backbone)
        capped = preset.family == "unet" and level_filters(
            preset.width, preset.depth, max_filters
        ) != level_filters(preset.width, preset.depth, None)
        rows.append(
            {
                "name": name,
                **count_params(model),
                "gflops": round(forward_flops(model) / 1e9, 3),
                "image_size": image_size,
                "capped": capped,
                "reference_row": preset.reference_row,
            }
        )
        del model
        keras.backend.clear_session()
    return rows


@exit_codes
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skinseg.models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser(
        "summary", allow_abbrev=False, help="parameters and forward GFLOPs of every preset"
    )
    summary.add_argument("--image-size", type=int, default=128, help="input size in pixels (default: 128)")
    summary.add_argument("--json", action="store_true", help="print a JSON list")
    summary.add_argument("--models", nargs="+", help="only these presets")
    summary.add_argument(
        "--max-filters",
        type=lambda t: None if t.lower() in ("none", "0") else int(t),
        default=DEFAULT_MAX_FILTERS,
        help="UNet channel cap; none: the reference's widths (default: %(default)s)",
    )
    summary.add_argument("--backbone", default="resnet101", help="DeepLabV3+ backbone (default: %(default)s)")
    convert = sub.add_parser(
        "convert-hardnet68", allow_abbrev=False, help="PyTorch HarDNet68 checkpoint -> encoder .weights.h5"
    )
    convert.add_argument("source", help="hardnet68.pth (needs torch) or a .npz of its state dict")
    convert.add_argument("target", help="output, ending in .weights.h5")
    args = parser.parse_args(argv)
    import_tensorflow()
    if args.command == "convert-hardnet68":
        from skinseg.models.convert import convert_hardnet68

        try:
            convert_hardnet68(args.source, args.target)
        except (OSError, KeyError, ValueError, RuntimeError) as err:
            print(f"error: {args.source}: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.target}; train with --model hardnet_mseg --backbone-weights {args.target}")
        return 0
    from skinseg.models.registry import UnknownModelError, resolve

    try:
        names = [resolve(n).name for n in args.models] if args.models else None
    except UnknownModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = summarize(args.image_size, names, args.max_filters, args.backbone)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'model':<24}{'params':>15}{'trainable':>15}{'GFLOPs@' + str(args.image_size):>12}  capped  reference row"
    )
    for r in rows:
        print(
            f"{r['name']:<24}{r['params']:>15,}{r['trainable_params']:>15,}{r['gflops']:>12.2f}  "
            f"{'yes' if r['capped'] else 'no':<6}  {r['reference_row']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
