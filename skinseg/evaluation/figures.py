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


def case_grid(cases: list[tuple[str, float, np.ndarray]], path: str, title: str) -> None:
    """`cases`: (label, dice, overlay image) for the best, median and worst cases."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases), 3.6))
    for ax, (label, dice, image) in zip(np.atleast_1d(axes), cases):
        ax.imshow(image)
        ax.set_title(f"{printable(label)}\nDice {dice:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{printable(title)}  (green: truth, magenta: prediction)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def dice_boxplot(names: list[str], values: list[list[float]], path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names)), 4.5))
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(
        range(1, len(names) + 1), [printable(n) for n in names], rotation=30, ha="right", fontsize=8
    )
    ax.set_ylabel("per-image Dice (test)")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
