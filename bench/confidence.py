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
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from scipy import stats

from bench.report import finish, parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def read_joined(predictions: str, per_image: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(ids, confidence, flagged, dice) over the images present in both files, sorted by ID."""
    with open(predictions, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"image", "confidence", "flagged"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{predictions}: not a predict.py predictions.csv (no column {sorted(missing)[0]})")
    scored = {_stem(r["image"]): (float(r["confidence"]), r["flagged"] == "1") for r in rows}
    with open(per_image, newline="", encoding="utf-8") as handle:
        dice = {r["id"]: float(r["dice"]) for r in csv.DictReader(handle) if r.get("dice") not in ("", None)}
    ids = sorted(set(scored) & set(dice))
    if len(ids) < 10:
        raise ValueError(f"{predictions} and {per_image} share {len(ids)} image(s); 10 at least are needed")
    conf = np.array([scored[i][0] for i in ids])
    flagged = np.array([scored[i][1] for i in ids])
    return ids, conf, flagged, np.array([dice[i] for i in ids])


def group_difference(dice: np.ndarray, low: np.ndarray, seed: int = 0) -> dict:
    """Mean Dice of the rest minus that of the `low` group, with the 95 % bootstrap CI of that
    difference (the two groups resampled independently)."""
    a, b = dice[low], dice[~low]
    out = {"n_low": int(a.size), "dice_low": float(a.mean()), "dice_rest": float(b.mean())}
    out["difference"] = out["dice_rest"] - out["dice_low"]
    if a.size < 2 or b.size < 2:
        out["ci"] = (float("nan"), float("nan"))
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


def validate(conf: np.ndarray, flagged: np.ndarray, dice: np.ndarray, share: float = 0.1) -> dict:
    k = max(1, int(round(share * conf.size)))
    low = np.zeros(conf.size, dtype=bool)
    low[np.argsort(conf, kind="stable")[:k]] = True
    return {
        "n": int(conf.size),
        "dice": float(dice.mean()),
        "spearman": float(stats.spearmanr(conf, dice).statistic),
        "least_confident": group_difference(dice, low),
        "flagged": group_difference(dice, flagged) if flagged.any() else None,
    }


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(
            f"bench.confidence: {cmd[1]} failed (exit {done.returncode}):\n{done.stderr[-2000:]}"
        )
    return done.stdout


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--model", help="a run folder or saved model: run predict.py and evaluate.py on --data")
    p.add_argument("--data", nargs=2, metavar=("IMAGES", "MASKS"))
    p.add_argument("--out", help="folder for the masks and the evaluation (default: a temporary one)")
    p.add_argument("--predictions", help="predict.py's predictions.csv")
    p.add_argument("--per-image", help="evaluate.py's per_image.csv for the same images")
    args = p.parse_args(argv)
    if args.model:
        if not args.data:
            p.error("--model needs --data IMAGES MASKS")
        out = args.out or tempfile.mkdtemp(prefix="confidence-")
        masks = os.path.join(out, "masks")
        _run(
            [sys.executable, "predict.py", "--model", args.model, args.data[0], "--out", masks, "--overwrite"]
        )
        text = _run(
            [
                sys.executable,
                "evaluate.py",
                "--model",
                args.model,
                "--data",
                *args.data,
                "--runs-dir",
                os.path.join(out, "evaluation"),
            ]
        )
        folder = re.search(r"^wrote (.+?) \(", text, flags=re.M).group(1)
        predictions, per_image = os.path.join(masks, "predictions.csv"), os.path.join(folder, "per_image.csv")
    elif args.predictions and args.per_image:
        predictions, per_image = args.predictions, args.per_image
    else:
        p.error("give --model and --data, or --predictions and --per-image")
    _, conf, flagged, dice = read_joined(predictions, per_image)
    result = validate(conf, flagged, dice)
    rows = []
    for name in ("least_confident", "flagged"):
        group = result[name]
        if group is None:
            rows.append({"group": name, "n": 0})
            continue
        lo, hi = group["ci"]
        rows.append(
            {
                "group": name,
                "n": group["n_low"],
                "dice": round(group["dice_low"], 4),
                "rest": round(group["dice_rest"], 4),
                "difference": round(group["difference"], 4),
                "95% CI": f"[{lo:.3f}, {hi:.3f}]",
            }
        )
    lo = result["least_confident"]["ci"][0]
    finish(
        "confidence",
        args,
        rows,
        ["group", "n", "dice", "rest", "difference", "95% CI"],
        {"spearman": result["spearman"], "decile_gap_ci_low": lo},
        notes=f"{result['n']} images, mean Dice {result['dice']:.4f}; Spearman(confidence, Dice) "
        f"{result['spearman']:.3f}; {predictions} joined with {per_image}",
    )


if __name__ == "__main__":
    main()
