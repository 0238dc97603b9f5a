"""Levers for robustness, each against `--recipe best`, over repeated training runs: trains every
lever with --seeds seeds on the reference set's training split and scores it three ways, in one
table: on the reference test split (in distribution); on the cross-source set (default:
isic2018_extra128, 1,694 ISIC 2018 images the reference never used); and on the cross-source
hold-out (`--held-out`, default bench/cross_source_holdout.txt: the 401 of those images with IDs
from ISIC_0015000 on, later acquisitions than any reference image), which the "both data sets"
levers leave out of their training (train.py --exclude) and so can be scored there too.

Per lever: Dice mean ± sd over seeds; 95 % CI over test images of the per-image Dice averaged over
seeds; the effect against the recipe: mean per-image difference of that averaged Dice with its
95 % bootstrap CI and the share of images improved, and the paired Wilcoxon p; the same on the
cross-source set and on the hold-out; minutes of training per run. Inference-only levers (TTA,
no post-processing) reuse the recipe's networks. With the recipe's width 16 (128 px, 15 epochs)
one run on the reference set took 8 minutes on one 2-core CPU host, and 25 to 35 minutes on a
slower one (the minutes column says which): the whole default table is hours of CPU.

  python -m bench.ablation [--seeds 3] [--epochs 15] [--width 16] [--levers recipe tta ...]
                          [--fewer-seeds "both data sets" 2] [--held-out IDS | --held-out none]

A lever's run folder that already holds a finished run is scored, not retrained (an unfinished one
is resumed), and scores are kept in --out/scores.json under the network's digest: adding a lever or
a seed later trains and scores only what is new. A finished folder trained with other options or
another length than the lever's command (e.g. from before the recipe changed) is refused, named.
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
HOLDOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cross_source_holdout.txt")

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
    # The recipe's augmentation policy is the dermoscopy one since it won over three seeds: this lever
    # is the recipe as it was (revision fed6aca's table named its folders recipe-sN, and the policy's
    # dermoscopy_augmentation-sN).
    "default augmentation policy": (["--aug-policy", "default"], []),
    # A no-op on data stored as squares (both shared sets are): for sets of original-size images.
    "aspect-preserving resize (pad)": (["--fit", "pad"], []),
    "both data sets": (["--data", EXTRA], []),  # trains on the cross-source set: no cross-source score
    # the shipped model's setting with the policy it was trained with: the pair that says whether the
    # policy still helps once other acquisitions are in the training set
    "both data sets, default policy": (["--data", EXTRA, "--aug-policy", "default"], []),
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
        _refuse_stale(run, [*cmd[2:], *extra])
        progress = run_progress(run)
        done, planned = progress["completed_epochs"], progress["epochs"]
        if done < planned:
            print(f"bench.ablation: {out} stopped after epoch {done} of {planned}; resuming it")
            subprocess.run(
                [sys.executable, "train.py", "--out", out, "--resume", "--verbose", "2"], check=True
            )
    return sum(float(r.get("time_s") or 0) for r in run.read_history()) / 60


def _refuse_stale(run, argv: list[str]) -> None:
    """A finished run is reused only if this command would train it again: a folder from before a
    change of the recipe (or of a lever's options) must not be scored under today's name."""
    from skinseg.cli import train as train_cli
    from skinseg.training.config import AUTO_FILTERS, ConfigError, RunConfig, config_from_args

    given = set(vars(train_cli.build_parser(True).parse_args(argv)))
    config = config_from_args(train_cli.build_parser().parse_args(argv), given)
    try:
        stored = RunConfig.load(run.config_path)
    except ConfigError as err:
        raise SystemExit(f"bench.ablation: {err}; move {run.path} away or pass another --out") from None
    wanted, saved = config.recorded(), stored.recorded()
    # its length too (recorded() leaves it out for --resume --epochs): a 15-epoch run is no 30-epoch one
    wanted["epochs"], saved["epochs"] = config.epochs, stored.epochs
    if wanted.get("max_filters") == AUTO_FILTERS:
        wanted["max_filters"] = saved.get("max_filters")  # auto: settled when the run started, and recorded
    differ = [k for k in sorted(set(wanted) | set(saved)) if wanted.get(k) != saved.get(k)]
    if differ:
        shown = ", ".join(f"{k} {saved.get(k)!r} (now {wanted.get(k)!r})" for k in differ[:4])
        shown += f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise SystemExit(
            f"bench.ablation: {run.path} was trained with other options than this lever's command: "
            f"{shown}; move it away or pass another --out"
        )


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


def ablation_rows(results: dict[str, dict], *, with_held_out: bool) -> list[dict]:
    """The table's rows from each lever's runs (per run: "dice_by_id" on the test split,
    "cross_by_id" on the cross-source set and "held_by_id" on the hold-out, each None where the run
    trained on those images; "dice", "cross", "held" their means; "minutes"). Effects are paired
    per image against the recipe's runs, each image's Dice averaged over a lever's seeds first."""
    from skinseg.evaluation.table import averaged_dice, mean_sd, paired_wilcoxon
    from skinseg.metrics.aggregate import bootstrap_ci

    def averaged(runs, key):
        scored = [{"dice_by_id": r[key]} for r in runs if r.get(key)]
        return averaged_dice(scored) if scored else None

    def effect(lever, by_id, base_by_id):
        if lever == "recipe" or by_id is None or base_by_id is None:
            return "—"
        return f"{paired_effect(by_id, base_by_id)}, p {paired_wilcoxon(by_id, base_by_id):.2g}"

    recipe_runs = results["recipe"]["runs"]
    base = averaged_dice(recipe_runs)
    cross_base, held_base = averaged(recipe_runs, "cross_by_id"), averaged(recipe_runs, "held_by_id")
    rows = []
    for lever, result in results.items():
        runs = result["runs"]
        dice = averaged_dice(runs)
        lo, hi = bootstrap_ci(np.array(list(dice.values())))
        minutes = [r["minutes"] for r in runs if np.isfinite(r["minutes"])]
        row = {
            "lever": lever,
            "runs": len(runs),
            "dice": mean_sd([r["dice"] for r in runs], "{:.4f}"),
            "ci95": f"[{lo:.4f}, {hi:.4f}]",
            "effect_vs_recipe": "—" if lever == "recipe" else paired_effect(dice, base),
            "p_vs_recipe": "—" if lever == "recipe" else f"{paired_wilcoxon(dice, base):.3g}",
            "cross_source_dice": mean_sd([r["cross"] for r in runs], "{:.4f}"),
            "cross_effect": effect(lever, averaged(runs, "cross_by_id"), cross_base),
        }
        if with_held_out:
            row["held_out_dice"] = mean_sd([r["held"] for r in runs], "{:.4f}")
            row["held_out_effect"] = effect(lever, averaged(runs, "held_by_id"), held_base)
        row["train_min"] = f"{np.mean(minutes):.1f}" if minutes else "(recipe's runs)"
        rows.append(row)
    return rows


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
        default=HOLDOUT,
        metavar="IDS",
        help="the cross-source set's IDs scored as the hold-out (a column of its own) and kept out of the "
        '"both data sets" lever\'s training (train.py --exclude); "none": no hold-out column, and that '
        "lever trains on the whole cross-source set",
    )
    p.add_argument("--out", default=os.path.join("bench", "out", "ablation"))
    args = p.parse_args(argv)
    fewer = {}
    for lever, n in args.fewer_seeds:
        if lever not in LEVERS or not n.isdigit() or int(n) < 1:
            p.error(f"--fewer-seeds {lever} {n}: needs one of the levers and a count >= 1")
        fewer[lever] = int(n)
    cross = args.cross or [os.path.join(EXTRA, "training", "image"), os.path.join(EXTRA, "training", "label")]
    if not os.path.isdir(args.data) or not all(os.path.isdir(folder) for folder in cross):
        print(f"bench.ablation: {args.data} or {cross[0]} not found; pass --data and --cross")
        print("RATIOS skipped=1")
        return
    held_ids: frozenset = frozenset()
    if args.held_out != "none":
        from skinseg.data_pipeline.split import read_id_list

        held_ids = frozenset(read_id_list(args.held_out))
        from skinseg.data_pipeline.discovery import discover_pairs

        found = {pair.id for pair in discover_pairs(*cross).splits["all"]} & held_ids
        if not found:
            p.error(f"--held-out {args.held_out}: none of its IDs is in {cross[0]}; pass --held-out none")
        for lever, (train_extra, eval_extra) in list(LEVERS.items()):
            if train_extra is not None and EXTRA in train_extra:
                LEVERS[lever] = ([*train_extra, "--exclude", os.path.abspath(args.held_out)], eval_extra)
    os.makedirs(args.out, exist_ok=True)
    cache_path = os.path.join(args.out, "scores.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path, encoding="utf-8") as handle:
            cache = json.load(handle)
    results: dict[str, dict] = {}
    for lever in ["recipe", *[name for name in args.levers if name != "recipe"]]:
        train_extra, eval_extra = LEVERS[lever]
        trains_on_cross = train_extra is not None and EXTRA in train_extra
        runs = []
        for seed in range(fewer.get(lever, args.seeds)):
            folder = (
                "recipe" if train_extra is None else lever.split(" (")[0].replace(" ", "_").replace(",", "")
            )
            if held_ids and trains_on_cross:
                folder += "-held_out"  # never a run that trained on the hold-out (the shipped model's)
            out = os.path.join(args.out, f"{folder}-s{seed}")
            minutes = _train(out, seed, args, train_extra) if train_extra is not None else float("nan")
            # The whole cross-source set is scored once; the hold-out is its listed part.
            scored = None if trains_on_cross and not held_ids else _score(out, eval_extra, cross, cache)
            test = _score(out, eval_extra, None, cache)
            with atomic_path(cache_path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
                json.dump(cache, handle)
            by_id = scored["by_id"] if scored else {}
            held = {i: v for i, v in by_id.items() if i in held_ids}
            runs.append(
                {
                    "name": out,
                    "dice_by_id": test["by_id"],
                    "dice": test["dice"],
                    "cross": None if trains_on_cross else scored["dice"],
                    "cross_by_id": None if trains_on_cross else by_id,
                    "held": float(np.mean(list(held.values()))) if held else None,
                    "held_by_id": held or None,
                    "minutes": minutes,
                }
            )
        results[lever] = {"runs": runs}

    rows = ablation_rows(results, with_held_out=bool(held_ids))
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
