"""Evaluate trained runs on their test split (the only place the test set is touched), and any
model, or masks made by any tool, on any labelled set.

python evaluate.py --run runs/baseline            # one run: eval/per_image.csv, eval/summary.json
python evaluate.py --all                          # every run under runs/ -> runs/results.md, .csv, .tex
python evaluate.py --run runs/x --at input --tta
python evaluate.py --model pretrained --data clinic/            # -> runs/external/pretrained--<digest>/
python evaluate.py --model runs/cv5-f0 runs/cv5-f1 runs/cv5-f2 --data ISIC2018/ --tta   # an ensemble
python evaluate.py --predictions other_tool_masks/ --data ISIC2018/   # score another tool's masks
"""

from __future__ import annotations

import argparse
import logging
import os

from skinseg.cli import exit_codes, import_tensorflow, positive_int, probability, setup_logging

log = logging.getLogger("skinseg")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--run", nargs="+", metavar="RUN", help="run folder(s) to evaluate")
    target.add_argument(
        "--all",
        action="store_true",
        help="every run under --runs-dir (with --data: also on that set), then results.md, .csv, .tex",
    )
    target.add_argument(
        "--model",
        nargs="+",
        metavar="RUN|FILE|pretrained",
        help="score a model on --data SET (several: their ensemble, probabilities averaged); written to "
        "RUNS/external/<model>--<test-set digest>/, listed by --all",
    )
    target.add_argument(
        "--predictions",
        metavar="MASKS",
        help="score a folder of masks made by any tool on --data SET (matched to the test images by "
        "stem: ID.png, ID_segmentation.png, ...; at each image's original size)",
    )
    parser.add_argument(
        "--runs-dir",
        default="runs",
        help="where --all looks, and where --model/--predictions write external/ (default: %(default)s)",
    )
    parser.add_argument(
        "--save-probs",
        action="store_true",
        help="also write each test image's probabilities at its original size (probabilities/ID.npz, "
        "float16, compressed) for ensembling or calibration elsewhere",
    )
    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--at",
        choices=("original", "input"),
        default="original",
        help="score at each image's original size, as the ISIC challenge does, or at the model's "
        "input size, as the reference table did (default: %(default)s)",
    )
    scoring.add_argument("--tta", action="store_true", help="average flipped predictions")
    scoring.add_argument(
        "--threshold",
        type=probability,
        default=None,
        metavar="X",
        help="fixed probability threshold, no clean-up (default: each run's threshold and clean-up "
        "chosen on its validation split, RUN/postprocess.json)",
    )
    scoring.add_argument(
        "--empty",
        choices=("diagonal", "nan"),
        default="diagonal",
        help="surface distances when exactly one mask is empty (default: %(default)s)",
    )
    scoring.add_argument(
        "--spacing",
        metavar="S|ROW,COL|CSV",
        help="size of an original pixel (e.g. in mm) for the distances: one value, ROW,COL, or a CSV "
        "with columns id,spacing (default: distances in pixels)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        nargs="+",
        action="append",
        metavar="PATH",
        help="evaluate on this data set's test split instead of the run's: a data set folder, or an "
        "image folder and its mask folder (one test set per call)",
    )
    data.add_argument(
        "--skip-bad", action="store_true", help="leave out unusable test files instead of stopping"
    )
    data.add_argument(
        "--allow-empty-masks",
        action="store_true",
        help="score a test set whose masks are all empty (refused otherwise: every model that finds "
        "nothing would score Dice 1.0)",
    )
    data.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score test images the run trained or selected its model on (refused otherwise)",
    )
    other = parser.add_argument_group("table and run")
    other.add_argument(
        "--baseline",
        metavar="RUN",
        help="run name the p-values compare against (default: the plain baseline run)",
    )
    other.add_argument(
        "--batch-size", type=positive_int, default=16, metavar="N", help="(default: %(default)s)"
    )
    other.add_argument("--force", action="store_true", help="re-evaluate runs whose results are up to date")
    return parser


@exit_codes
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data:
        if len(args.data) > 1 or len(args.data[0]) > 2:
            given = " ".join(" ".join(paths) for paths in args.data)
            parser.error(
                f"--data {given}: evaluate.py scores one test set per call; give --data ROOT or "
                "--data IMAGES MASKS (call it again for another set)"
            )
        args.data = args.data[0]
    if (args.model or args.predictions) and not args.data:
        parser.error(
            f"{'--model' if args.model else '--predictions'} needs --data SET: the labelled set to score on"
        )
    if args.predictions and args.save_probs:
        parser.error("--save-probs: --predictions scores masks, which have no probabilities")
    setup_logging()
    import_tensorflow()
    from skinseg.evaluation.compare_runs import evaluate_all
    from skinseg.evaluation.external import evaluate_models, score_predictions
    from skinseg.evaluation.score_run import EvalSettings, evaluate_run

    settings = EvalSettings(
        at=args.at,
        tta=args.tta,
        threshold=args.threshold,
        empty=args.empty,
        data=tuple(os.path.abspath(p) for p in args.data) if args.data else None,
        spacing=args.spacing,
    )
    # what every kind of evaluation takes from the command line
    common = {
        "batch_size": args.batch_size,
        "skip_bad": args.skip_bad,
        "allow_overlap": args.allow_overlap,
        "save_probs": args.save_probs,
        "allow_empty_masks": args.allow_empty_masks,
    }
    if args.all:
        path = evaluate_all(args.runs_dir, settings, baseline=args.baseline, force=args.force, **common)
        with open(path, encoding="utf-8") as handle:
            print(handle.read())
        print(f"wrote {path}")
        return 0
    if args.predictions:
        folder, summary = score_predictions(
            args.predictions,
            settings,
            runs_dir=args.runs_dir,
            skip_bad=args.skip_bad,
            allow_empty_masks=args.allow_empty_masks,
        )
    elif args.model:
        folder, summary = evaluate_models(args.model, settings, runs_dir=args.runs_dir, **common)
    if args.predictions or args.model:
        _print(summary["run"], summary, settings)
        print(f"wrote {folder.path} (python evaluate.py --all --runs-dir {args.runs_dir} lists it)")
        return 0
    for run in map(os.path.abspath, args.run):
        if settings.data:  # scored elsewhere: beside the run, never over its own test scores
            folder, summary = evaluate_models([run], settings, runs_dir=os.path.dirname(run), **common)
            _print(run, summary, settings)
            print(f"wrote {folder.path} (the run's own eval/ is untouched)")
            continue
        _print(run, evaluate_run(run, settings, **common), settings)
    return 0


def _print(name: str, summary: dict, settings) -> None:
    m = summary["metrics"]
    loss = f"  test loss {summary['test_loss']:.4f}" if summary.get("test_loss") is not None else ""
    print(
        f"{name}: Dice {m['dice']['mean']:.4f} [{m['dice']['ci95'][0]:.4f}, {m['dice']['ci95'][1]:.4f}]  "
        f"Jaccard {m['jaccard']['mean']:.4f}  HD {m['hd']['mean']:.3f}  "
        f"ASD (ITK) {m['avg_hausdorff']['mean']:.3f}{loss}  "
        f"({summary['n']} images of {summary['test_set']['name']} at {settings.at} size, "
        f"{sum(summary['empty_cases'].values())} with an empty mask)"
    )
