"""results.md: one row per run, the reference's columns first, the best of each column in bold,
and a paired Wilcoxon signed-rank test of per-image Dice against the baseline run."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

# (key in the run's table row, header, higher is better, format)
COLUMNS = (
    ("train_loss", "Train loss", False, "{:.4f}"),
    ("test_loss", "Test loss", False, "{:.4f}"),
    ("dice", "Dice", True, "{:.4f}"),
    ("volume_similarity", "Volume similarity", True, "{:.4f}"),
    ("avg_hausdorff", "ASD (ITK avg. Hausdorff)", False, "{:.4f}"),
    ("hd", "Hausdorff distance", False, "{:.4g}"),
    ("jaccard", "Jaccard", True, "{:.4f}"),
    ("threshold_jaccard", "Threshold Jaccard", True, "{:.4f}"),
    ("hd95", "HD95", False, "{:.4g}"),
    ("asd_medpy", "MedPy ASD (pred. to truth)", False, "{:.4g}"),
    ("assd_medpy", "MedPy ASSD", False, "{:.4g}"),
    ("params", "Parameters", False, "{:,}"),
    ("ms_per_image", "Inference ms/image", False, "{:.2f}"),
)


def paired_wilcoxon(run: dict[str, float], baseline: dict[str, float]) -> float:
    """p-value of a two-sided Wilcoxon signed-rank test on Dice paired by image ID."""
    shared = sorted(set(run) & set(baseline))
    if len(shared) < 2:
        return math.nan
    a = np.array([run[i] for i in shared])
    b = np.array([baseline[i] for i in shared])
    if np.allclose(a, b):
        return 1.0
    return float(stats.wilcoxon(a, b).pvalue)


def table_row(summary: dict) -> dict:
    m = summary["metrics"]
    row = {
        key: m[key]["mean"]
        for key in (
            "dice",
            "volume_similarity",
            "avg_hausdorff",
            "hd",
            "jaccard",
            "threshold_jaccard",
            "hd95",
            "asd_medpy",
            "assd_medpy",
        )
        if "mean" in m[key]
    }
    row.update(
        train_loss=summary.get("train_loss"),
        test_loss=summary.get("test_loss"),
        params=summary.get("params"),
        ms_per_image=summary.get("ms_per_image"),
    )
    return row


def _progress_note(progress: dict | None) -> str:
    """Marks a run whose training did not run its course."""
    if not progress or progress["completed_epochs"] >= progress["epochs"]:
        return ""
    done = f"{progress['completed_epochs']}/{progress['epochs']} epochs"
    return f" (early stopping: {done})" if progress["stopped_early"] else f" (unfinished: {done})"


def render_results(runs: list[dict], baseline: str | None) -> str:
    """`runs`: [{"name", "summary", "dice_by_id"}]. Returns the Markdown document."""
    rows = [dict(table_row(r["summary"]), name=r["name"]) for r in runs]
    base = next((r for r in runs if r["name"] == baseline), None)
    best = {}
    for key, _, higher, _ in COLUMNS:
        values = [
            row[key] for row in rows if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
        ]
        if values:
            best[key] = max(values) if higher else min(values)
    header = [
        "Run",
        *[c[1] for c in COLUMNS],
        "Dice 95% CI",
        "n",
        "Empty cases",
        f"p vs {baseline or 'baseline'}",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, row in zip(runs, rows):
        cells = [run["name"] + _progress_note(run["summary"].get("progress"))]
        for key, _, _, fmt in COLUMNS:
            value = row.get(key)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                cells.append("—")
                continue
            text = fmt.format(value)
            cells.append(f"**{text}**" if len(rows) > 1 and value == best.get(key) else text)
        summary = run["summary"]
        ci = summary["metrics"]["dice"].get("ci95", [math.nan, math.nan])
        cells.append(f"[{ci[0]:.4f}, {ci[1]:.4f}]")
        cells.append(str(summary["n"]))
        cells.append(str(sum(summary["empty_cases"].values())))
        if base is None or run is base:
            cells.append("—")
        else:
            p = paired_wilcoxon(run["dice_by_id"], base["dice_by_id"])
            cells.append("—" if math.isnan(p) else f"{p:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
