"""Levers for robustness, each against `--recipe best`, over repeated training runs: trains every
lever with --seeds seeds on the reference set's training split, scores it on the reference test
split and on a cross-source set (default: isic2018_extra128, 1,694 ISIC 2018 images the reference
never used), and writes the ablation table (Markdown) to --out/ablation.md.

Per lever: Dice mean ± sd over seeds; 95 % CI over test images of the per-image Dice averaged over
seeds; the effect against the recipe: mean per-image difference of that averaged Dice with its
95 % bootstrap CI and the share of images improved, and the paired Wilcoxon p; the same on the
cross-source set; minutes of training per run. Inference-only levers (TTA, no post-processing)
reuse the recipe's networks. With the recipe's width 16 (128 px, 15 epochs) one run on the
reference set takes about 8 minutes on the 2-core CPU, one on both sets about 26: the whole default
table is about 4.5 CPU-hours (estimated from those run times; width 32 takes 3.5x as long).

  python -m bench.ablation [--seeds 3] [--epochs 15] [--width 16] [--levers recipe tta ...]
                          [--fewer-seeds "both data sets" 2]

A lever's run folder that already holds a finished run is scored, not retrained (e.g. the shipped
model's run copied in as both_data_sets-s0; an unfinished one is resumed), and scores are kept in
--out/scores.json under the network's digest: adding a lever or a seed later trains and scores
only what is new.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np

from bench.data import REAL
from bench.report import finish, parser
from skinseg.core.atomic import atomic_path
from skinseg.evaluation.score_run import run_progress

EXTRA = os.path.join(os.path.dirname(REAL), "isic2018_extra128")

# lever -> (extra train.py options, extra evaluate.py options); None: reuses the recipe's runs.
LEVERS: dict[str, tuple[list[str] | None, list[str]]] = {
    "recipe": ([], []),
    "tta": (None, ["--tta"]),
    "threshold 0.5, no clean-up": (None, ["--threshold", "0.5"]),
    "focal loss": (["--loss", "focal"], []),
    "dice loss": (["--loss", "dice"], []),
    "elastic warps (p 0.3)": (["--elastic", "0.3"], []),
    "AdamW": (["--optimizer", "adamw"], []),
    "EMA of weights (0.99)": (["--ema", "0.99"], []),
    "strong augmentation": (["--aug-policy", "strong"], []),
    # A no-op on data stored as squares (both shared sets are): for sets of original-size images.
    "aspect-preserving resize (pad)": (["--fit", "pad"], []),
    "both data sets": (["--data", EXTRA], []),  # trains on the cross-source set: no cross-source score
}


def _train(out: str, seed: int, args, extra: list[str]) -> float:
    """Trains the run unless its folder holds a finished one (an interrupted run is resumed, not
    scored half-trained); minutes of training, from the run's own epoch times (start-up and the
    post-processing choice left out), so runs trained now and earlier compare."""
    from skinseg.core.run_folder import RunFolder

    cmd = [sys.executable, "train.py", "--recipe", "best", "--data", args.data, "--seed", str(seed)]
    cmd += ["--epochs", str(args.epochs), "--width", str(args.width), "--out", out, "--verbose", "2"]
    run = RunFolder(out)
    if not run.has_config():
        subprocess.run([*cmd, *extra], check=True)
    else:
        progress = run_progress(run)
        done, planned = progress["completed_epochs"], progress["epochs"]
        if done < planned:
            print(f"bench.ablation: {out} stopped after epoch {done} of {planned}; resuming it")
            subprocess.run(
                [sys.executable, "train.py", "--out", out, "--resume", "--verbose", "2"], check=True
            )
    return sum(float(r.get("time_s") or 0) for r in run.read_history()) / 60


def _score(out: str, extra: list[str], data: list[str] | None, cache: dict) -> dict:
    """Per-image Dice of the run's best.keras (with `extra` evaluate.py options, on `data` or the
    run's own test split). Kept in `cache` under the network's digest, so rerunning the bench to
    add a lever rescoring nothing it scored before."""
    from skinseg.core.run_folder import RunFolder, file_digest

    run = RunFolder(out)
    # "v2": scores on another set written before it (evaluate.py --run --data then read the run's own
    # eval/) are never served
    key = json.dumps(["v2", os.path.basename(out), file_digest(run.best_network), extra, data])
    if key in cache:
        return cache[key]
    if not data:  # the run's own test split: RUN/eval/
        cmd = [sys.executable, "evaluate.py", "--run", out, "--force", *extra]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        summary, rows = run.read_summary(), run.read_per_image()
    else:  # another set: an external evaluation beside the run (evaluate.py says where it wrote)
        cmd = [sys.executable, "evaluate.py", "--model", out, "--data", *data, *extra]
        cmd += ["--runs-dir", os.path.dirname(os.path.abspath(out))]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        folder = re.search(r"^wrote (.+?) \(", done.stdout, flags=re.M).group(1)
        with open(os.path.join(folder, "summary.json"), encoding="utf-8") as handle:
            summary = json.load(handle)
        with open(os.path.join(folder, "per_image.csv"), newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    cache[key] = {
        "dice": summary["metrics"]["dice"]["mean"],
        "by_id": {row["id"]: float(row["dice"]) for row in rows},
    }
    return cache[key]


def held_out_set(ids_file: str, source: list[str], out: str) -> list[str]:
    """IMAGES MASKS folders of links to the listed IDs of `source` (an images folder and a masks
    folder), in the bench's output: the cross-source hold-out as a data set evaluate.py takes."""
    from skinseg.data_pipeline.discovery import discover_pairs
    from skinseg.data_pipeline.split import read_id_list

    ids = read_id_list(ids_file)
    images, masks = (os.path.join(out, "held_out", kind) for kind in ("image", "label"))
    for folder in (images, masks):
        os.makedirs(folder, exist_ok=True)
    pairs = [p for p in discover_pairs(*source).splits["all"] if p.id in ids]
    for pair in pairs:
        for path, folder in ((pair.image, images), (pair.mask, masks)):
            link = os.path.join(folder, os.path.basename(path))
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(path), link)
    return [images, masks]


def paired_effect(dice: dict[str, float], base: dict[str, float]) -> str:
    """Mean per-image difference against the baseline, its 95 % bootstrap CI over images, and the
    share of images it improves (the direction a rank test alone does not give)."""
    from skinseg.metrics.aggregate import bootstrap_ci

    shared = sorted(set(dice) & set(base))
    if not shared:
        raise ValueError("no images scored by both the lever and the recipe")
    diff = np.array([dice[i] - base[i] for i in shared])
    lo, hi = bootstrap_ci(diff)
    return f"{diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}], {np.mean(diff > 0):.0%} better"


def main(argv=None) -> None:
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    p.add_argument(
        "--fewer-seeds",
        nargs=2,
        action="append",
        default=[],
        metavar=("LEVER", "N"),
        help="train LEVER with seeds 0..N-1 only (an expensive lever; with N = 1 its sd is not available)",
    )
    p.add_argument("--data", default=REAL)
    p.add_argument("--cross", nargs=2, metavar=("IMAGES", "MASKS"), help="cross-source set")
    p.add_argument(
        "--held-out",
        metavar="IDS",
        help="score the cross-source set's listed IDs only (e.g. bench/cross_source_holdout.txt), and keep "
        'them out of the "both data sets" lever\'s training (train.py --exclude)',
    )
    p.add_argument("--out", default=os.path.join("bench", "out", "ablation"))
    args = p.parse_args(argv)
    fewer = {}
    for lever, n in args.fewer_seeds:
        if lever not in LEVERS or not n.isdigit() or int(n) < 1:
            p.error(f"--fewer-seeds {lever} {n}: needs one of the levers and a count >= 1")
        fewer[lever] = int(n)
    cross = args.cross or [os.path.join(EXTRA, "training", "image"), os.path.join(EXTRA, "training", "label")]
    if args.held_out:
        if not all(os.path.isdir(folder) for folder in cross):
            print(f"bench.ablation: {cross[0]} not found; pass --cross")
            print("RATIOS skipped=1")
            return
        cross = held_out_set(args.held_out, cross, args.out)
        LEVERS["both data sets"] = (["--data", EXTRA, "--exclude", os.path.abspath(args.held_out)], [])
    if not os.path.isdir(args.data):
        print(f"bench.ablation: {args.data} not found; pass --data")
        print("RATIOS skipped=1")
        return
    from skinseg.evaluation.table import averaged_dice, mean_sd, paired_wilcoxon
    from skinseg.metrics.aggregate import bootstrap_ci

    os.makedirs(args.out, exist_ok=True)
    cache_path = os.path.join(args.out, "scores.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as handle:
            cache = json.load(handle)
    results: dict[str, dict] = {}
    for lever in ["recipe", *[name for name in args.levers if name != "recipe"]]:
        train_extra, eval_extra = LEVERS[lever]
        runs = []
        for seed in range(fewer.get(lever, args.seeds)):
            folder = (
                "recipe" if train_extra is None else lever.split(" (")[0].replace(" ", "_").replace(",", "")
            )
            if args.held_out and lever == "both data sets":
                folder += "-held_out"  # never a run that trained on the hold-out (the shipped model's)
            out = os.path.join(args.out, f"{folder}-s{seed}")
            minutes = _train(out, seed, args, train_extra) if train_extra is not None else float("nan")
            trained_on_cross = train_extra is not None and EXTRA in train_extra and not args.held_out
            cross_score = None if trained_on_cross else _score(out, eval_extra, cross, cache)
            test = _score(out, eval_extra, None, cache)
            with atomic_path(cache_path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
                json.dump(cache, handle)
            runs.append(
                {
                    "name": out,
                    "dice_by_id": test["by_id"],
                    "dice": test["dice"],
                    "cross": cross_score["dice"] if cross_score else None,
                    "cross_by_id": cross_score["by_id"] if cross_score else None,
                    "minutes": minutes,
                }
            )
        results[lever] = {"runs": runs}

    def cross_dice(runs):
        scored = [{"dice_by_id": r["cross_by_id"]} for r in runs if r.get("cross_by_id")]
        return averaged_dice(scored) if scored else None

    base, cross_base = averaged_dice(results["recipe"]["runs"]), cross_dice(results["recipe"]["runs"])
    rows = []
    for lever, result in results.items():
        runs = result["runs"]
        dice, cross_by_id = averaged_dice(runs), cross_dice(runs)
        lo, hi = bootstrap_ci(np.array(list(dice.values())))
        minutes = [r["minutes"] for r in runs if np.isfinite(r["minutes"])]
        rows.append(
            {
                "lever": lever,
                "runs": len(runs),
                "dice": mean_sd([r["dice"] for r in runs], "{:.4f}"),
                "ci95": f"[{lo:.4f}, {hi:.4f}]",
                "effect_vs_recipe": "—" if lever == "recipe" else paired_effect(dice, base),
                "p_vs_recipe": "—" if lever == "recipe" else f"{paired_wilcoxon(dice, base):.3g}",
                "cross_source_dice": mean_sd([r["cross"] for r in runs], "{:.4f}"),
                "cross_effect": "—"
                if lever == "recipe" or cross_by_id is None
                else f"{paired_effect(cross_by_id, cross_base)}, p {paired_wilcoxon(cross_by_id, cross_base):.2g}",
                "train_min": f"{np.mean(minutes):.1f}" if minutes else "(recipe's runs)",
            }
        )
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    with open(os.path.join(args.out, "ablation.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "ablation.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle)
    recipe_mean = float(np.mean([r["dice"] for r in results["recipe"]["runs"]]))
    finish(
        "ablation",
        args,
        rows,
        columns,
        {"recipe_test_dice": recipe_mean},
        notes=f"{args.seeds} seed(s), {args.epochs} epochs, width {args.width}; table in {args.out}/ablation.md",
    )


if __name__ == "__main__":
    main()
