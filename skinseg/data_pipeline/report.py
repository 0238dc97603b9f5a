"""`python -m skinseg.data_pipeline inspect`: what a data set holds, and everything wrong with it."""

from __future__ import annotations

import os

import numpy as np

from skinseg.data_pipeline.checks import check_pairs
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.leakage import find_overlaps


def inspect_dataset(path: str, masks: str | None = None) -> dict:
    """Per split: usable pairs, image size range, mean lesion fraction, empty masks; and every
    problem (severity "error": the pair is unusable; "warning": converted or noteworthy)."""
    found = discover_pairs(path, masks)
    report = {"root": found.root, "layout": found.layout, "splits": {}, "problems": []}
    problems = list(found.problems)
    checked = {}
    for split, pairs in found.splits.items():
        infos, split_problems = check_pairs(pairs)
        checked[split] = infos
        problems += split_problems
        heights = [i.size[0] for i in infos]
        widths = [i.size[1] for i in infos]
        fractions = np.array([i.lesion_fraction for i in infos])
        report["splits"][split] = {
            "pairs": len(infos),
            "unusable": len(pairs) - len(infos),
            "height": [min(heights), max(heights)] if infos else None,
            "width": [min(widths), max(widths)] if infos else None,
            "mean_lesion_fraction": round(float(fractions.mean()), 4) if infos else None,
            "empty_masks": int((fractions == 0).sum()),
        }
    problems += find_overlaps(checked)  # an image in two splits; duplicates within one
    report["problems"] = [p.to_dict() for p in sorted(problems, key=lambda p: (p.file, p.problem))]
    return report


def format_report(report: dict) -> str:
    lines = [f"data set: {report['root']}  (layout: {report['layout']})", ""]
    header = (
        f"{'split':<12}{'pairs':>7}{'unusable':>10}  {'height':<11}{'width':<11}{'lesion':>8}{'empty':>7}"
    )
    lines.append(header)
    for name, s in report["splits"].items():
        height = f"{s['height'][0]}-{s['height'][1]}" if s["height"] else "-"
        width = f"{s['width'][0]}-{s['width'][1]}" if s["width"] else "-"
        lesion = f"{s['mean_lesion_fraction']:.3f}" if s["mean_lesion_fraction"] is not None else "-"
        lines.append(
            f"{name:<12}{s['pairs']:>7}{s['unusable']:>10}  {height:<11}{width:<11}{lesion:>8}"
            f"{s['empty_masks']:>7}"
        )
    problems = report["problems"]
    lines.append("")
    if not problems:
        lines.append("problems: none")
    else:
        errors = sum(p["severity"] == "error" for p in problems)
        lines.append(f"problems: {errors} error(s), {len(problems) - errors} warning(s)")
        root = report["root"]
        for p in problems:
            name = os.path.relpath(p["file"], root) if p["file"].startswith(root) else p["file"]
            lines.append(f"  {p['severity']:<8}{name}: {p['problem']}")
    return "\n".join(lines)
