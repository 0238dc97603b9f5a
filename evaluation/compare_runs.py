"""Every run under a folder -> RUNS/results.md (one row per run) and RUNS/dice_boxplot.png."""

from __future__ import annotations

import csv
import json
import logging
import os

from evaluation.score_run import EvalSettings, EvaluationError, evaluate_run

log = logging.getLogger("skinseg")


def read_per_image(run_dir: str) -> dict[str, float]:
    with open(os.path.join(run_dir, "eval", "per_image.csv"), newline="") as handle:
        return {row["id"]: float(row["dice"]) for row in csv.DictReader(handle)}


def is_up_to_date(run_dir: str, settings: EvalSettings) -> bool:
    """Results newer than the model, computed with the same settings."""
    summary_path = os.path.join(run_dir, "eval", "summary.json")
    model_path = os.path.join(run_dir, "best.keras")
    if not (os.path.exists(summary_path) and os.path.exists(model_path)):
        return False
    if os.path.getmtime(summary_path) < os.path.getmtime(model_path):
        return False
    with open(summary_path) as handle:
        return json.load(handle).get("settings") == settings.to_json()


def find_runs(runs_dir: str) -> list[str]:
    if not os.path.isdir(runs_dir):
        raise EvaluationError(f"{runs_dir}: no such folder (train a model first, or pass --runs-dir)")
    return sorted(
        os.path.join(runs_dir, name)
        for name in os.listdir(runs_dir)
        if os.path.exists(os.path.join(runs_dir, name, "config.json"))
    )


def pick_baseline(run_dirs: list[str]) -> str | None:
    """The plain baseline: model baseline with no augmentation, flooding or LR schedule."""
    from training.config import RunConfig

    plain = []
    for run in run_dirs:
        c = RunConfig.load(os.path.join(run, "config.json"))
        if c.model == "baseline" and not (c.aug or c.flooding or c.lr_schedule != "none"):
            plain.append(os.path.basename(run))
    return plain[0] if plain else None


def evaluate_all(
    runs_dir: str,
    settings: EvalSettings = EvalSettings(),
    *,
    baseline: str | None = None,
    force: bool = False,
    batch_size: int = 16,
    skip_bad: bool = False,
) -> str:
    from data_pipeline.atomic import write_text
    from metrics.figures import dice_boxplot
    from metrics.table import render_results

    run_dirs = find_runs(runs_dir)
    if not run_dirs:
        raise EvaluationError(f"{runs_dir}: no run folders (folders with a config.json) to evaluate")
    results = []
    for run in run_dirs:
        if not os.path.exists(os.path.join(run, "best.keras")):
            log.warning("%s: no best.keras yet (training did not finish an epoch); left out", run)
            continue
        if not force and is_up_to_date(run, settings):
            log.info("%s: results are up to date", run)
            with open(os.path.join(run, "eval", "summary.json")) as handle:
                summary = json.load(handle)
        else:
            log.info("evaluating %s", run)
            summary = evaluate_run(run, settings, batch_size=batch_size, skip_bad=skip_bad)
        results.append({"name": os.path.basename(run), "summary": summary, "dice_by_id": read_per_image(run)})
    baseline = baseline or pick_baseline([os.path.join(runs_dir, r["name"]) for r in results])
    path = os.path.join(runs_dir, "results.md")
    where = (
        "each image's original size (predictions resized back, then thresholded)"
        if settings.at == "original"
        else "the model's input size (masks resampled like the images)"
    )
    note = (
        f"Test-set results, scored at {where}; threshold {settings.threshold}"
        f"{', flip TTA' if settings.tta else ''}. Each model is its run's best.keras, selected on the "
        "validation split. Distances in pixels"
        f"{' (or the units of --spacing ' + settings.spacing + ')' if settings.spacing else ''}. "
        "ASD (ITK avg. Hausdorff) is SimpleITK's average Hausdorff distance, the reference table's "
        "'average surface distance'; MedPy's directed ASD and its symmetric ASSD follow. "
        "p: two-sided Wilcoxon signed-rank test of per-image Dice against the baseline run.\n\n"
    )
    write_text(path, "# Results\n\n" + note + render_results(results, baseline))
    dice_boxplot(
        [r["name"] for r in results],
        [list(r["dice_by_id"].values()) for r in results],
        os.path.join(runs_dir, "dice_boxplot.png"),
    )
    return path
