"""results.md: one row per run, the reference's columns first, the best of each column in bold,
and a paired Wilcoxon signed-rank test of per-image Dice against the baseline run."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from skinseg.inference.postprocess import PostProcessing
from skinseg.metrics.aggregate import bootstrap_ci

# (key in the run's table row, header, higher is better, format)
COLUMNS = (
    ("train_loss", "Train loss", False, "{:.4f}"),
    ("test_loss", "Test loss", False, "{:.4f}"),
    ("dice", "Dice", True, "{:.4f}"),
    ("volume_similarity", "Volume similarity", True, "{:.4f}"),
    ("avg_hausdorff", "ASD (ITK avg. Hausdorff)", False, "{:.4f}"),
    ("hausdorff_itk", "Hausdorff distance (ITK)", False, "{:.4g}"),
    ("jaccard", "Jaccard", True, "{:.4f}"),
    ("threshold_jaccard", "Threshold Jaccard", True, "{:.4f}"),
    ("hd", "Boundary HD", False, "{:.4g}"),
    ("hd95", "Boundary HD95", False, "{:.4g}"),
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
            "hausdorff_itk",
            "hd",
            "jaccard",
            "threshold_jaccard",
            "hd95",
            "asd_medpy",
            "assd_medpy",
        )
        if key in m and "mean" in m[key]  # hausdorff_itk: not in summaries of version 0.2
    }
    row.update(
        train_loss=summary.get("train_loss"),
        test_loss=summary.get("test_loss"),
        params=summary.get("params"),
        ms_per_image=summary.get("ms_per_image"),
    )
    return row


def _progress_note(summary: dict) -> str:
    """Marks a run whose training did not run its course, whose test images it trained on, or
    whose network is narrower than the reference's (capped to fit the machine's memory)."""
    notes = []
    progress = summary.get("progress")
    if progress and progress["completed_epochs"] < progress["epochs"]:
        done = f"{progress['completed_epochs']}/{progress['epochs']} epochs"
        notes.append(f"early stopping: {done}" if progress["stopped_early"] else f"unfinished: {done}")
    if summary.get("training_overlap"):
        notes.append(f"{summary['training_overlap']} test images also trained on")
    capacity = summary.get("capacity") or {}
    if capacity.get("capped"):
        notes.append(
            f"capped at {capacity['max_filters']} channels: {capacity['parameters']:,} of the reference's "
            f"{capacity['reference_parameters']:,} parameters"
        )
    return f" ({'; '.join(notes)})" if notes else ""


def _mask_step(summary: dict) -> str:
    if summary.get("mask_step"):  # masks scored as given (--predictions)
        return summary["mask_step"]
    record = summary.get("postprocess")
    return PostProcessing.from_json(record).describe() if record else "threshold 0.5"


def trained_on(result: dict) -> str:
    return str(result["summary"].get("trained_on") or "—")


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
        "Trained on",
        *[c[1] for c in COLUMNS],
        "Dice 95% CI",
        "n",
        "Empty cases",
        "Mask step",
        f"p vs {baseline or 'baseline'}",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, row in zip(runs, rows):
        cells = [run["name"] + _progress_note(run["summary"]), trained_on(run)]
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
        cells.append(_mask_step(summary))
        cells.append(_p_text(run, base))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _p_text(run: dict, base: dict | None) -> str:
    if base is None or run is base:
        return "—"
    p = paired_wilcoxon(run["dice_by_id"], base["dice_by_id"])
    return "—" if math.isnan(p) else f"{p:.3g}"


def table_csv_rows(runs: list[dict], baseline: str | None, test_set: dict) -> list[dict]:
    """results.csv: one row per run of a section, every column as a plain number."""
    base = next((r for r in runs if r["name"] == baseline), None)
    out = []
    for run in runs:
        summary = run["summary"]
        row = table_row(summary)
        ci = summary["metrics"]["dice"].get("ci95", [math.nan, math.nan])
        out.append(
            {
                "test_set": test_set["name"],
                "test_set_digest": test_set["digest"],
                "n": summary["n"],
                "run": run["name"],
                "kind": summary.get("kind", "run"),
                "trained_on": trained_on(run),
                **{key: row.get(key) for key, *_ in COLUMNS},
                "dice_ci95_low": ci[0],
                "dice_ci95_high": ci[1],
                "empty_cases": sum(summary["empty_cases"].values()),
                "mask_step": _mask_step(summary),
                "baseline": baseline or "",
                "p_vs_baseline": _p_text(run, base).replace("—", ""),
            }
        )
    return out


def csv_text(rows: list[dict]) -> str:
    import csv
    import io

    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if v is None else repr(v) if isinstance(v, float) else v) for k, v in row.items()}
        )
    return buffer.getvalue()


# results.tex: the reference's columns and the two most used others
LATEX_COLUMNS = (
    ("dice", "Dice", "{:.4f}"),
    ("volume_similarity", "VS", "{:.4f}"),
    ("avg_hausdorff", "ASD", "{:.4f}"),
    ("hausdorff_itk", "HD", "{:.4g}"),
    ("hd95", "HD95", "{:.4g}"),
)


def _latex(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\textasciicircum{}"),
    ):
        text = text.replace(a, b)
    return text


def render_latex(runs: list[dict], test_set: dict) -> str:
    """One `table` environment per test set (booktabs rules), the best value of a column in bold."""
    rows = [table_row(r["summary"]) for r in runs]
    best = {}
    for key, _, _ in LATEX_COLUMNS:
        values = [
            row[key] for row in rows if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])
        ]
        if values:
            higher = next(c[2] for c in COLUMNS if c[0] == key)
            best[key] = max(values) if higher else min(values)
    lines = [
        "% results.tex (evaluate.py --all); needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{Test set {_latex(test_set['name'])} ($n = {test_set['n']}$ images).}}",
        "\\begin{tabular}{ll" + "r" * len(LATEX_COLUMNS) + "}",
        "\\toprule",
        "Model & Trained on & " + " & ".join(c[1] for c in LATEX_COLUMNS) + " \\\\",
        "\\midrule",
    ]
    for run, row in zip(runs, rows):
        cells = [_latex(run["name"]), _latex(trained_on(run))]
        for key, _, fmt in LATEX_COLUMNS:
            value = row.get(key)
            if value is None or not math.isfinite(value):
                cells.append("--")
                continue
            text = fmt.format(value)
            cells.append(f"\\textbf{{{text}}}" if len(rows) > 1 and value == best.get(key) else text)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def cv_groups(results: list[dict]) -> dict[str, list[dict]]:
    """The runs of each cross-validation: same configuration but for fold and seed."""
    import json
    import re

    groups: dict[str, list[dict]] = {}
    labels: dict[str, str] = {}
    for result in results:
        config = result["config"]
        # a repeat (--seeds) of a cross-validation is another cross-validation: folds pooled, never seeds
        identity = {k: v for k, v in config.recorded().items() if k != "fold"}
        key = json.dumps({**identity, "epochs": config.epochs}, sort_keys=True)
        labels.setdefault(key, re.sub(r"-f\d+", "", result["name"]))
        groups.setdefault(key, []).append(result)
    return {labels[key]: sorted(group, key=lambda r: r["config"].fold or 0) for key, group in groups.items()}


def render_cross_validation(groups: dict[str, list[dict]]) -> str:
    """A row per cross-validation: each metric's mean ± sd over its folds (each fold scored on its
    own, untouched fold), and the out-of-fold Dice pooled over every image with its CI."""
    header = [
        "Cross-validation",
        "Folds",
        "Trained on",
        *[c[1] + " (mean ± sd over folds)" for c in REPEAT_COLUMNS],
        "Pooled out-of-fold Dice",
        "95% CI",
        "n",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, group in groups.items():
        k = group[0]["config"].folds
        rows = [table_row(r["summary"]) for r in group]
        pooled = np.array([d for r in group for d in r["dice_by_id"].values()])
        lo, hi = bootstrap_ci(pooled) if len(pooled) > 1 else (math.nan, math.nan)
        cells = [label, f"{len(group)} of {k}", trained_on(group[0])]
        cells += [mean_sd([row.get(key) for row in rows], fmt) for key, _, fmt in REPEAT_COLUMNS]
        cells += [f"{pooled.mean():.4f}", f"[{lo:.4f}, {hi:.4f}]", str(len(pooled))]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "## Cross-validation (out of fold)\n\nEach fold's run is scored on its own fold, which it never "
        "trained or selected on (`train.py --folds K`); folds are stratified by lesion size. Score an "
        "ensemble of the folds on a test set with `evaluate.py --model RUN-f0 ... RUN-f<K-1> --data SET`.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def render_by_source(runs: list[dict]) -> str:
    """Runs trained on several data sets: their test splits scored one by one."""
    lines = []
    for run in runs:
        for source, summary in run["summary"].get("by_source", {}).items():
            m = summary["metrics"]
            ci = m["dice"].get("ci95", [math.nan, math.nan])
            means = [m[key].get("mean") for key in ("dice", "jaccard", "hd95")]
            dice, jaccard, hd95 = (
                "—" if v is None or not math.isfinite(v) else f"{v:{f}}"
                for v, f in zip(means, (".4f", ".4f", ".4g"))
            )
            lines.append(
                f"| {run['name']} | {source} | {summary['n']} | {dice} | "
                f"[{ci[0]:.4f}, {ci[1]:.4f}] | {jaccard} | {hd95} |"
            )
    if not lines:
        return ""
    header = "| Run | Test set | n | Dice | Dice 95% CI | Jaccard | HD95 |\n|---|---|---|---|---|---|---|\n"
    return "\n## Per data set\n\n" + header + "\n".join(lines) + "\n"


# Columns of the repeats table: (metric key, header, format)
REPEAT_COLUMNS = (
    ("dice", "Dice", "{:.4f}"),
    ("volume_similarity", "VS", "{:.4f}"),
    ("avg_hausdorff", "ASD (ITK)", "{:.4f}"),
    ("hausdorff_itk", "HD (ITK)", "{:.4g}"),
    ("hd", "Boundary HD", "{:.4g}"),
    ("hd95", "Boundary HD95", "{:.4g}"),
)


def mean_sd(values: list[float], fmt: str) -> str:
    """mean ± sd over the finite values, with their number when some were not finite."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "—"
    text = fmt.format(finite[0])
    if len(finite) > 1:
        text = f"{fmt.format(float(np.mean(finite)))} ± {fmt.format(float(np.std(finite, ddof=1)))}"
    return text if len(finite) == len(values) else f"{text} (of {len(finite)})"


def averaged_dice(group: list[dict]) -> dict[str, float]:
    """Per-image Dice averaged over a group's training runs (images all of them scored)."""
    shared = set.intersection(*(set(r["dice_by_id"]) for r in group))
    return {i: float(np.mean([r["dice_by_id"][i] for r in group])) for i in sorted(shared)}


def render_repeats(groups: dict[str, list[dict]], baseline: str | None) -> str:
    """One row per configuration trained several times (runs differing only in --seed): each
    metric's mean ± standard deviation over the training runs, the 95% CI over test images of the
    per-image Dice averaged over the runs, and the paired Wilcoxon test of that averaged Dice
    against the baseline's row. Empty when no configuration was repeated."""
    if not any(len(group) > 1 for group in groups.values()):
        return ""
    base = next((g for g in groups.values() if any(r["name"] == baseline for r in g)), None)
    base_dice = averaged_dice(base) if base else None
    header = ["Row", "Runs", *[c[1] + " (mean ± sd)" for c in REPEAT_COLUMNS], "Dice 95% CI", "n"]
    header.append(f"p vs {baseline or 'baseline'}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, group in groups.items():
        rows = [table_row(r["summary"]) for r in group]
        cells = [label, str(len(group))]
        cells += [mean_sd([row.get(key) for row in rows], fmt) for key, _, fmt in REPEAT_COLUMNS]
        dice = averaged_dice(group)
        if len(dice) > 1:
            lo, hi = bootstrap_ci(np.array(list(dice.values())))
            cells.append(f"[{lo:.4f}, {hi:.4f}]")
        else:
            cells.append("—")
        cells.append(str(len(dice)))
        if base is None or group is base:
            cells.append("—")
        else:
            p = paired_wilcoxon(dice, base_dice)
            cells.append("—" if math.isnan(p) else f"{p:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\n## Rows over repeated training runs\n\nRuns that differ only in their seed form one row: "
        "mean ± sample standard deviation over the training runs; the CI (bootstrap over test images) "
        "and p (paired Wilcoxon) use each image's Dice averaged over the row's runs.\n\n"
    )
    return note + "\n".join(lines) + "\n"
