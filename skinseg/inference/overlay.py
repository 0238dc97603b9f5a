"""Mask outlines drawn on an image: predict.py's overlays and evaluation's case figures."""

from __future__ import annotations

import cv2
import numpy as np


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Truth outline in green, prediction outline in magenta, on a copy of the uint8 RGB image."""
    out = image.copy()
    for mask, colour in ((truth, (0, 255, 0)), (pred, (255, 0, 255))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, max(1, image.shape[0] // 128))
    return out


def mark_for_review(image: np.ndarray, confidence: float) -> np.ndarray:
    """An orange frame and the confidence on an overlay whose mask is flagged for review."""
    out = image.copy()
    h, w = out.shape[:2]
    thickness = max(2, min(h, w) // 64)
    cv2.rectangle(out, (0, 0), (w - 1, h - 1), (255, 140, 0), thickness)
    scale = max(0.4, min(h, w) / 600)
    cv2.putText(
        out,
        f"review {confidence:.2f}",
        (2 * thickness, 2 * thickness + int(22 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 140, 0),
        max(1, thickness // 2),
        cv2.LINE_AA,
    )
    return out
