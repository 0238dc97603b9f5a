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
