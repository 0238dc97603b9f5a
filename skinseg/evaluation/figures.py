"""Figures of an evaluation: best/median/worst overlays per run, and per-image Dice per run."""

from __future__ import annotations

import numpy as np

from skinseg.core.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def printable(text: str) -> str:
    """A label matplotlib can draw: a file name that is not UTF-8 (surrogate escapes) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


DPI = 300  # print resolution: the figures go into papers


def case_grid(cases: list[tuple[str, float, np.ndarray]], path: str, title: str) -> None:
    """`cases`: (label, dice, overlay image) for the best, median and worst cases. PATH (PNG) and
    the same figure as PDF beside it."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases), 3.9))
    for ax, (label, dice, image) in zip(np.atleast_1d(axes), cases):
        ax.imshow(image)
        ax.set_title(f"{printable(label)}\nDice {dice:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{printable(title)}: best, median and worst test image by Dice", fontsize=10)
    fig.legend(
        handles=[Patch(color=(0, 0.8, 0), label="ground truth"), Patch(color=(1, 0, 1), label="prediction")],
        loc="lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))
    _save(fig, path, ("png", "pdf"))
    plt.close(fig)


def dice_boxplot(names: list[str], values: list[list[float]], stem: str, title: str) -> list[str]:
    """Per-image Dice of each run on one test set: STEM.png (300 dpi), STEM.pdf and STEM.svg.
    Each box is labelled with its n; the legend says what the box, the line and the marker are."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(names)), 4.8))
    ax.boxplot(values, showmeans=True)
    labels = [f"{printable(n)}\n(n = {len(v)})" for n, v in zip(names, values)]
    ax.set_xticks(range(1, len(names) + 1), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("per-image Dice (test)")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(printable(title), fontsize=9)
    ax.legend(
        handles=[
            Line2D([], [], color="tab:orange", label="median"),
            Line2D([], [], color="green", marker="^", linestyle="", label="mean"),
            Line2D(
                [],
                [],
                color="black",
                marker="o",
                markerfacecolor="none",
                linestyle="",
                label="outlier (> 1.5 IQR)",
            ),
        ],
        loc="lower left",
        fontsize=7,
    )
    fig.tight_layout()
    paths = _save(fig, stem + ".png", ("png", "pdf", "svg"))
    plt.close(fig)
    return paths


def _save(fig, path: str, formats) -> list[str]:
    base = path.rsplit(".", 1)[0]
    paths = []
    for fmt in formats:
        target = f"{base}.{fmt}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI)
        paths.append(target)
    return paths
