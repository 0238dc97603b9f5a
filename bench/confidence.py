"""Does predict.py's per-image confidence rank the masks by quality? On a labelled set the model did
not train on: `predict.py` writes predictions.csv (confidence, flagged), `evaluate.py` the per-image
Dice, and this joins them by image ID and reports the Spearman correlation of confidence with Dice,
the least confident 10 % against the rest (mean Dice of each, the difference with its 95 %
bootstrap CI), and the same for the masks predict.py flagged (confidence below its fixed threshold).

  python -m bench.confidence --model RUN --data IMAGES MASKS [--out DIR]   # runs both commands
  python -m bench.confidence --predictions DIR/predictions.csv --per-image EVAL/per_image.csv

The issue's bar (#24): Spearman >= 0.5, and the CI of the difference excludes 0.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats

from bench.report import finish, parser
from skinseg.data_pipeline.discovery import image_id

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_IMAGES = 20  # the least confident tenth needs two images for a bootstrap interval


def _id(path: str) -> str:
    # the image ID as evaluate.py forms it: the file's stem, NFC-normalised
    return image_id(os.path.splitext(os.path.basename(path))[0])


def _rows(path: str, needed: tuple[str, ...]) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: a file saved by Excel
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot read it ({err})") from None
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (columns: {', '.join(columns) or 'none'})")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def _number(path: str, row: int, column: str, text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: row {row}: {column} {text!r} is not a number") from None


def read_joined(predictions: str, per_image: str) -> dict:
    """Confidence, flag and Dice over the images present in both files (sorted by ID), with what
    was left out of the join and why."""
    scored: dict[str, tuple[float, bool]] = {}
    for row, r in enumerate(_rows(predictions, ("image", "confidence", "flagged")), start=2):
        key = _id(r["image"])
        if key in scored:
            raise ValueError(f"{predictions}: row {row}: image ID {key} appears twice")
        flag = r["flagged"].strip().lower()
        if flag not in ("0", "1", "true", "false"):
            raise ValueError(f"{predictions}: row {row}: flagged {r['flagged']!r} is not 0 or 1")
        scored[key] = (_number(predictions, row, "confidence", r["confidence"]), flag in ("1", "true"))
    dice: dict[str, float] = {}
    not_finite = 0
    for row, r in enumerate(_rows(per_image, ("id", "dice")), start=2):
        key = image_id(r["id"])
        if key in dice:
            raise ValueError(f"{per_image}: row {row}: image ID {key} appears twice")
        value = _number(per_image, row, "dice", r["dice"])
        if math.isfinite(value):
            dice[key] = value
        else:
            not_finite += 1
    ids = sorted(set(scored) & set(dice))
    if len(ids) < MIN_IMAGES:
        raise ValueError(
            f"{predictions} and {per_image} share {len(ids)} scored image(s); {MIN_IMAGES} at least are needed"
        )
    return {
        "ids": ids,
        "confidence": np.array([scored[i][0] for i in ids]),
        "flagged": np.array([scored[i][1] for i in ids]),
        "dice": np.array([dice[i] for i in ids]),
        "only_predicted": len(set(scored) - set(dice)),
        "only_scored": len(set(dice) - set(scored)),
        "dice_not_finite": not_finite,
    }


def group_difference(dice: np.ndarray, low: np.ndarray, seed: int = 0) -> dict:
    """Mean Dice of the rest minus that of the `low` group, with the 95 % bootstrap CI of that
    difference (the two groups resampled independently)."""
    a, b = dice[low], dice[~low]
    nan = float("nan")
    out = {"n_low": int(a.size), "dice_low": float(a.mean()) if a.size else nan}
    out["dice_rest"] = float(b.mean()) if b.size else nan
    out["difference"] = out["dice_rest"] - out["dice_low"]
    if a.size < 2 or b.size < 2:
        out["ci"] = (nan, nan)
        return out
    ci = stats.bootstrap(
        (b, a),
        lambda x, y: np.mean(x) - np.mean(y),
        n_resamples=10000,
        method="percentile",
        random_state=seed,
    ).confidence_interval
    out["ci"] = (float(ci.low), float(ci.high))
    return out


def validate(
    conf: np.ndarray, flagged: np.ndarray, dice: np.ndarray, share: float = 0.1, seed: int = 0
) -> dict:
    k = max(1, int(round(share * conf.size)))
    # ties at the cut are broken at random, not by ID (ISIC IDs follow acquisition order)
    tie_break = np.random.default_rng(seed).permutation(conf.size)
    low = np.zeros(conf.size, dtype=bool)
    low[np.lexsort((tie_break, conf))[:k]] = True
    constant = bool(np.all(conf == conf[0]))
    return {
        "n": int(conf.size),
        "dice": float(dice.mean()),
        # a constant confidence ranks nothing: no correlation, and no least confident tenth
        "spearman": float("nan") if constant else float(stats.spearmanr(conf, dice).statistic),
        "least_confident": None if constant else group_difference(dice, low),
        "flagged": group_difference(dice, flagged) if flagged.any() else None,
    }


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench.confidence: {cmd[1]} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


def _predict_and_evaluate(model: str, images: str, masks: str, out: str) -> tuple[str, str]:
    """predict.py and evaluate.py on the same images, into `out`; the two files to join."""
    out = os.path.abspath(out)
    masks_out, evaluation = os.path.join(out, "masks"), os.path.join(out, "evaluation")
    model = model if model == "pretrained" else os.path.abspath(model)
    images, masks = os.path.abspath(images), os.path.abspath(masks)
    _run([sys.executable, "predict.py", "--model", model, images, "--out", masks_out, "--overwrite"])
    _run([sys.executable, "evaluate.py", "--model", model, "--data", images, masks, "--runs-dir", evaluation])
    # the evaluation just written is the newest per_image.csv under its folder
    written = glob.glob(os.path.join(evaluation, "**", "per_image.csv"), recursive=True)
    return os.path.join(masks_out, "predictions.csv"), max(written, key=os.path.getmtime)


def _row(name: str, group: dict | None) -> dict:
    if group is None:
        return {"group": name, "n": 0}
    lo, hi = group["ci"]
    return {
        "group": name,
        "n": group["n_low"],
        "dice": round(group["dice_low"], 4),
        "rest": round(group["dice_rest"], 4),
        "difference": round(group["difference"], 4),
        "95% CI": f"[{lo:.3f}, {hi:.3f}]",
    }


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument(
        "--model", help="a run folder, a saved model or pretrained: run predict.py and evaluate.py"
    )
    p.add_argument("--data", nargs=2, metavar=("IMAGES", "MASKS"), help="labelled images for --model")
    p.add_argument("--out", help="folder for --model's masks and evaluation (default: a temporary one)")
    p.add_argument("--predictions", help="predict.py's predictions.csv (instead of --model)")
    p.add_argument("--per-image", help="evaluate.py's per_image.csv for the same images")
    p.add_argument(
        "--ids",
        help="score only these image IDs (a file, one per line: e.g. images not used to choose the score)",
    )
    args = p.parse_args(argv)
    if args.model and (args.predictions or args.per_image):
        p.error("give --model and --data, or --predictions and --per-image, not both")
    if args.model:
        if not args.data:
            p.error("--model needs --data IMAGES MASKS")
        out = args.out or tempfile.mkdtemp(prefix="confidence-")
        predictions, per_image = _predict_and_evaluate(args.model, *args.data, out)
    elif args.predictions and args.per_image:
        predictions, per_image = args.predictions, args.per_image
    else:
        p.error("give --model and --data, or --predictions and --per-image")
    try:
        joined = read_joined(predictions, per_image)
        keep = np.ones(len(joined["ids"]), dtype=bool)
        if args.ids:
            from skinseg.core.errors import DataError
            from skinseg.data_pipeline.split import read_id_list

            try:
                wanted = {image_id(i) for i in read_id_list(args.ids)}
            except DataError as err:
                raise ValueError(str(err)) from None
            keep = np.array([i in wanted for i in joined["ids"]])
            if keep.sum() < MIN_IMAGES:
                raise ValueError(
                    f"{args.ids}: {keep.sum()} of its IDs are scored; {MIN_IMAGES} at least are needed"
                )
    except ValueError as err:
        sys.exit(f"bench.confidence: {err}")
    result = validate(joined["confidence"][keep], joined["flagged"][keep], joined["dice"][keep])
    rows = [_row("least_confident", result["least_confident"]), _row("flagged", result["flagged"])]
    left_out = [
        f"{joined['only_predicted']} predicted image(s) have no Dice",
        f"{joined['only_scored']} scored image(s) no prediction",
        f"{joined['dice_not_finite']} Dice value(s) not finite",
    ]
    if args.ids:
        left_out.append(f"{int((~keep).sum())} joined image(s) not in {args.ids}")
    least = result["least_confident"]
    finish(
        "confidence",
        args,
        rows,
        ["group", "n", "dice", "rest", "difference", "95% CI"],
        {"spearman": result["spearman"], "decile_gap_ci_low": least["ci"][0] if least else float("nan")},
        notes=f"{result['n']} images, mean Dice {result['dice']:.4f}; Spearman(confidence, Dice) "
        f"{result['spearman']:.3f}{' (a constant confidence ranks nothing)' if least is None else ''}; "
        f"{predictions} joined with {per_image}; left out: {'; '.join(left_out)}",
    )


if __name__ == "__main__":
    main()
