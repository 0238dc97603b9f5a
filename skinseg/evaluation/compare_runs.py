"""Every run under a folder -> RUNS/results.md (one row per run) and RUNS/dice_boxplot.png."""

from __future__ import annotations

import json
import logging
import os
import re

from skinseg.core.atomic import write_text
from skinseg.core.errors import SkinsegError
from skinseg.core.run_folder import RunFolder
from skinseg.evaluation.figures import dice_boxplot
from skinseg.evaluation.score_run import EvalSettings, EvaluationError, evaluate_run, evaluation_is_current
from skinseg.evaluation.table import render_by_source, render_repeats, render_results
from skinseg.training.config import RunConfig

log = logging.getLogger("skinseg")


def find_runs(runs_dir: str) -> list[RunFolder]:
    if not os.path.isdir(runs_dir):
        raise EvaluationError(f"{runs_dir}: no such folder (train a model first, or pass --runs-dir)")
    runs = (RunFolder(os.path.join(runs_dir, name)) for name in sorted(os.listdir(runs_dir)))
    return [run for run in runs if run.has_config()]


def pick_baseline(runs: list[RunFolder]) -> str | None:
    """The plain baseline: model baseline with no augmentation, flooding or LR schedule."""
    for run in runs:
        c = RunConfig.load(run.config_path)
        if c.model == "baseline" and not (c.aug or c.flooding or c.lr_schedule != "none"):
            return run.name
    return None


def repeat_groups(results: list[dict], runs: list[RunFolder]) -> dict[str, list[dict]]:
    """Evaluated runs grouped by their configuration without the seed, in table order; a group
    is labelled by its first run's name without its -s<seed> suffix."""
    by_name = {run.name: run for run in runs}
    members: dict[str, list[dict]] = {}
    for result in results:
        try:
            config = RunConfig.load(by_name[result["name"]].config_path)
        except SkinsegError:
            continue
        identity = {k: v for k, v in config.recorded().items() if k != "seed"}
        key = json.dumps({**identity, "epochs": config.epochs}, sort_keys=True)
        members.setdefault(key, []).append(result)
    groups: dict[str, list[dict]] = {}
    for group in members.values():
        label = re.sub(r"-s\d+$", "", group[0]["name"])
        while label in groups:  # another configuration with the same name stem
            label += "'"
        groups[label] = group
    return groups


def dice_by_id(run: RunFolder) -> dict[str, float]:
    return {row["id"]: float(row["dice"]) for row in run.read_per_image()}


def evaluate_all(
    runs_dir: str,
    settings: EvalSettings = EvalSettings(),
    *,
    baseline: str | None = None,
    force: bool = False,
    batch_size: int = 16,
    skip_bad: bool = False,
    allow_overlap: bool = False,
) -> str:
    runs = find_runs(runs_dir)
    if not runs:
        raise EvaluationError(f"{runs_dir}: no run folders (folders with a config.json) to evaluate")
    results, left_out = [], []
    for run in runs:
        if not os.path.exists(run.best_network):
            left_out.append((run.name, "no best.keras yet (training did not finish an epoch)"))
            log.warning("%s: %s; left out", run.path, left_out[-1][1])
            continue
        try:  # a damaged eval/summary.json is not up to date: it is scored again, not fatal
            current = not force and evaluation_is_current(run, settings.to_json(), figures=True)
        except (SkinsegError, ValueError, KeyError, TypeError, AttributeError):
            current = False
        if current:
            log.info("%s: results are up to date", run.path)
            summary = run.read_summary()
        else:
            log.info("evaluating %s", run.path)
            try:
                summary = evaluate_run(
                    run, settings, batch_size=batch_size, skip_bad=skip_bad, allow_overlap=allow_overlap
                )
            except SkinsegError as err:  # one run's problem must not cost the whole table
                left_out.append((run.name, str(err).splitlines()[0]))
                log.warning("%s: left out: %s", run.path, left_out[-1][1])
                continue
        results.append({"name": run.name, "summary": summary, "dice_by_id": dice_by_id(run)})
    if not results:
        reasons = "; ".join(f"{name}: {why}" for name, why in left_out)
        raise EvaluationError(f"{runs_dir}: no run could be evaluated ({reasons})")
    names = [r["name"] for r in results]
    if baseline is not None and baseline not in names:
        raise EvaluationError(f"--baseline {baseline}: no such evaluated run; runs: {', '.join(names)}")
    baseline = baseline or pick_baseline([run for run in runs if run.name in names])
    path = os.path.join(runs_dir, "results.md")
    where = (
        "each image's original size (predictions resized back, then thresholded)"
        if settings.at == "original"
        else "the model's input size (masks resampled like the images)"
    )
    masks = (
        f"threshold {settings.threshold}"
        if settings.threshold is not None
        else "each run's mask step (column Mask step): chosen on its validation split, or fixed at threshold "
        "0.5 without clean-up (--mask-step fixed, the reference's rounding)"
    )
    note = (
        f"Test-set results, scored at {where}; {masks}"
        f"{', flip TTA' if settings.tta else ''}. Each model is its run's best.keras, selected on the "
        "validation split. Distances in pixels"
        f"{' (or the units of --spacing ' + settings.spacing + ')' if settings.spacing else ''}. "
        "The reference's columns: ASD (ITK avg. Hausdorff) and Hausdorff distance (ITK) are SimpleITK's "
        "HausdorffDistanceImageFilter on the whole masks (GetAverageHausdorffDistance, "
        "GetHausdorffDistance: region distances over every pixel of each mask), as the reference "
        "computed them. Boundary HD and HD95 are over the masks' boundary pixels (MedPy's hd, hd95); "
        "MedPy's directed ASD and its symmetric ASSD follow. Empty masks: both empty, every distance 0; "
        "one empty, every distance is the image diagonal (the reference scored 100 px, its SimpleITK "
        "call failing) and the image is counted in the Empty column. "
        "p: two-sided Wilcoxon signed-rank test of per-image Dice against the baseline run.\n\n"
    )
    missing = "".join(f"\nLeft out: {name} ({why})." for name, why in left_out)
    write_text(
        path,
        "# Results\n\n"
        + note
        + render_results(results, baseline)
        + render_repeats(repeat_groups(results, runs), baseline)
        + render_by_source(results)
        + missing,
    )
    dice_boxplot(
        [r["name"] for r in results],
        [list(r["dice_by_id"].values()) for r in results],
        os.path.join(runs_dir, "dice_boxplot.png"),
    )
    return path
