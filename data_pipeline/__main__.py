"""Command line of the data layer: `inspect` a data set, or generate the `synthetic` one.

python -m skinseg.data_pipeline inspect ISIC2018/ [--json] [--strict]
python -m skinseg.data_pipeline synthetic OUT
"""

from __future__ import annotations

import argparse
import json
import sys

from skinseg.cli import exit_codes


@exit_codes
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skinseg.data_pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="report pairs, sizes, lesion fraction and problems")
    inspect.add_argument("path", help="data set folder (ISIC 2016/2017/2018, simple) or an images folder")
    inspect.add_argument("masks", nargs="?", help="masks folder, when PATH is an images folder")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    inspect.add_argument("--strict", action="store_true", help="exit 1 when any pair is unusable")
    synth = sub.add_parser("synthetic", help="write the synthetic data set to a folder")
    synth.add_argument("out", help="folder to create ({training,testing}/{image,label})")
    synth.add_argument("--train", type=int, default=320, help="training pairs (default: 320)")
    synth.add_argument("--test", type=int, default=80, help="test pairs (default: 80)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)

    if args.command == "inspect":
        from skinseg.data_pipeline.report import format_report, inspect_dataset

        report = inspect_dataset(args.path, args.masks)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        unusable = any(p["severity"] == "error" for p in report["problems"])
        return 1 if args.strict and unusable else 0
    from skinseg.data_pipeline.synthetic import generate_synthetic

    root = generate_synthetic(args.out, args.train, args.test, args.seed)
    print(f"wrote {args.train} training and {args.test} test pairs to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
