"""All metrics of one (prediction, truth) pair."""

from __future__ import annotations

import numpy as np

from skinseg.core.errors import SkinsegError
from skinseg.metrics.overlap import overlap_metrics
from skinseg.metrics.surface import empty_case, surface_metrics

METRICS = (
    "dice",
    "jaccard",
    "threshold_jaccard",
    "sensitivity",
    "specificity",
    "accuracy",
    "volume_similarity",
    "hd",
    "hd95",
    "avg_hausdorff",
    "hausdorff_itk",
    "asd_medpy",
    "assd_medpy",
)


class ShapeMismatchError(SkinsegError, ValueError):
    """A prediction and a ground truth of different shapes."""


def image_metrics(pred: np.ndarray, truth: np.ndarray, spacing=None, empty: str = "diagonal") -> dict:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ShapeMismatchError(f"prediction is {pred.shape} but the truth is {truth.shape}")
    return {
        **overlap_metrics(pred, truth),
        **surface_metrics(pred, truth, spacing, empty),
        "empty_case": empty_case(pred, truth),
    }
