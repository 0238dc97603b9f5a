"""Overlap metrics from one confusion count, with the ISIC challenge's conventions for the
degenerate cases (its scoring package is the reference the tests compare against):
- sensitivity is 1 when the truth is empty; specificity is 1 when the truth covers everything;
- Dice and Jaccard are 1 when both masks are empty;
- threshold-Jaccard is J when J >= 0.65, else 0 (the ISIC 2018 Task 1 score);
- volume similarity 1 - |P - G| / (P + G) is 1 when both are empty."""

from __future__ import annotations

import numpy as np

THRESHOLD_JACCARD = 0.65


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of two boolean masks."""
    tp = int(np.count_nonzero(pred & truth))
    p, g = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    fp, fn = p - tp, g - tp
    return tp, fp, fn, pred.size - tp - fp - fn


def overlap_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = confusion(pred, truth)
    union = tp + fp + fn
    jaccard = tp / union if union else 1.0
    sizes = 2 * tp + fp + fn  # |P| + |G|
    return {
        "dice": 2 * tp / sizes if sizes else 1.0,
        "jaccard": jaccard,
        "threshold_jaccard": jaccard if jaccard >= THRESHOLD_JACCARD else 0.0,
        "sensitivity": tp / (tp + fn) if tp + fn else 1.0,
        "specificity": tn / (tn + fp) if tn + fp else 1.0,
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "volume_similarity": 1.0 - abs(fp - fn) / sizes if sizes else 1.0,
    }
