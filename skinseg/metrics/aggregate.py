"""Per-image rows -> summary: mean, standard deviation and a 95 % bootstrap confidence interval
per metric, the count of NaN/Inf values per metric, and the count of each empty-mask case."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from skinseg.metrics.per_image import METRICS


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """BCa interval of the mean (percentile interval when BCa is degenerate)."""
    if len(values) < 2 or np.all(values == values[0]):
        return float(values.mean()), float(values.mean())
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = stats.bootstrap(
                (values,),
                np.mean,
                n_resamples=resamples,
                confidence_level=0.95,
                method=method,
                random_state=seed,
            ).confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            return float(ci.low), float(ci.high)
    return float("nan"), float("nan")


def summarize(rows: list[dict], metrics=METRICS, seed: int = 0) -> dict:
    summary = {"n": len(rows), "metrics": {}, "empty_cases": {}}
    for name in metrics:
        values = np.array([row[name] for row in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        entry = {"n": int(finite.size), "nonfinite": int(values.size - finite.size)}
        if finite.size:
            low, high = bootstrap_ci(finite, seed)
            entry.update(
                mean=float(finite.mean()),
                std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                ci95=[low, high],
            )
        summary["metrics"][name] = entry
    for case in ("both_empty", "prediction_empty", "truth_empty"):
        summary["empty_cases"][case] = sum(row.get("empty_case") == case for row in rows)
    return summary
