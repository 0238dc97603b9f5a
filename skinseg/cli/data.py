"""Command line of the data layer.

python -m skinseg.data_pipeline inspect ISIC2018/ [--json] [--strict]
python -m skinseg.data_pipeline fetch isic2018 [--to DIR]
python -m skinseg.data_pipeline make-reference ISIC2018/ reference128/
python -m skinseg.data_pipeline synthetic OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from skinseg.cli import exit_codes

# No TensorFlow below: the data tools import their modules at the top.
from skinseg.data_pipeline.fetch import ARCHIVE_BASE, fetch
from skinseg.data_pipeline.reference import make_reference
from skinseg.data_pipeline.report import format_report, inspect_dataset
from skinseg.data_pipeline.synthetic import data_home, generate_synthetic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect", allow_abbrev=False, help="report pairs, sizes, lesion fraction and problems"
    )
    inspect.add_argument("path", help="data set folder (ISIC 2016/2017/2018, simple) or an images folder")
    inspect.add_argument("masks", nargs="?", help="masks folder, when PATH is an images folder")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    inspect.add_argument("--strict", action="store_true", help="exit 1 when any pair is unusable")
    fetch = sub.add_parser(
        "fetch",
        allow_abbrev=False,
        help="download and unzip an ISIC challenge's segmentation archives (resumable, checked)",
    )
    fetch.add_argument("challenge", choices=("isic2016", "isic2017", "isic2018"))
    fetch.add_argument("--to", metavar="DIR", help="where to put them (default: ~/.cache/skinseg/CHALLENGE)")
    fetch.add_argument("--base-url", default=None, help=argparse.SUPPRESS)  # a mirror (and the tests)
    reference = sub.add_parser(
        "make-reference",
        allow_abbrev=False,
        help="rebuild the reference table's 800/200 images at 128 px from an ISIC 2018 download",
    )
    reference.add_argument("isic2018", help="the ISIC 2018 folder (as `fetch isic2018` leaves it)")
    reference.add_argument("out", help="folder to create ({training,testing}/{image,label})")
    synth = sub.add_parser("synthetic", allow_abbrev=False, help="write the synthetic data set to a folder")
    synth.add_argument("out", help="folder to create ({training,testing}/{image,label})")
    synth.add_argument("--train", type=int, default=320, help="training pairs (default: 320)")
    synth.add_argument("--test", type=int, default=80, help="test pairs (default: 80)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


@exit_codes
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "inspect":
        report = inspect_dataset(args.path, args.masks)
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        unusable = any(p["severity"] == "error" for p in report["problems"])
        return 1 if args.strict and unusable else 0
    if args.command == "fetch":
        to = args.to or os.path.join(data_home(), args.challenge)
        fetch(args.challenge, to, args.base_url or ARCHIVE_BASE)
        print(f"{args.challenge} is in {to}; train with: python train.py --data {to}")
        return 0
    if args.command == "make-reference":
        counts = make_reference(args.isic2018, args.out)
        print(f"wrote {counts['train']} training and {counts['test']} test pairs at 128 px to {args.out}")
        return 0

    root = generate_synthetic(args.out, args.train, args.test, args.seed)
    print(f"wrote {args.train} training and {args.test} test pairs to {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
