"""Every run under a folder -> RUNS/results.md (one row per run) and RUNS/dice_boxplot.png."""

from __future__ import annotations

import logging
import os

from skinseg.evaluation.score_run import EvalSettings, EvaluationError, evaluate_run
from skinseg.run_folder import RunFolder

log = logging.getLogger("skinseg")


def find_runs(runs_dir: str) -> list[RunFolder]:
    if not os.path.isdir(runs_dir):
        raise EvaluationError(f"{runs_dir}: no such folder (train a model first, or pass --runs-dir)")
    runs = (RunFolder(os.path.join(runs_dir, name)) for name in sorted(os.listdir(runs_dir)))
    return [run for run in runs if run.is_run()]


def pick_baseline(runs: list[RunFolder]) -> str | None:
    """The plain baseline: model baseline with no augmentation, flooding or LR schedule."""
    for run in runs:
        c = run.read_config()
        if c.model == "baseline" and not (c.aug or c.flooding or c.lr_schedule != "none"):
            return run.name
    return None


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
    from skinseg.data_pipeline.atomic import write_text
    from skinseg.metrics.figures import dice_boxplot
    from skinseg.metrics.table import render_results

    runs = find_runs(runs_dir)
    if not runs:
        raise EvaluationError(f"{runs_dir}: no run folders (folders with a config.json) to evaluate")
    results = []
    for run in runs:
        if not os.path.exists(run.best_network):
            log.warning("%s: no best.keras yet (training did not finish an epoch); left out", run.path)
            continue
        if not force and run.evaluation_is_current(settings.to_json(), figures=True):
            log.info("%s: results are up to date", run.path)
            summary = run.read_summary()
        else:
            log.info("evaluating %s", run.path)
            summary = evaluate_run(
                run, settings, batch_size=batch_size, skip_bad=skip_bad, allow_overlap=allow_overlap
            )
        results.append({"name": run.name, "summary": summary, "dice_by_id": dice_by_id(run)})
    baseline = baseline or pick_baseline([run for run in runs if run.name in {r["name"] for r in results}])
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
