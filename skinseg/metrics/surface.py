"""Distances between two 2-D masks, in pixels or in the units of a pixel spacing.

Surface distances, with MedPy's definitions (tested equal to `medpy.metric.binary`): a mask's
surface is the mask minus its erosion (4-connected, the outside counting as background); the
directed distances are those from each surface pixel of one mask to the nearest surface pixel of
the other. From them: Hausdorff (HD, the largest), HD95, MedPy's `asd` (the mean from the
prediction's surface to the truth's; here `asd_medpy`) and its symmetric form (`assd_medpy`).

The reference table's "average surface distance" is another quantity: SimpleITK's
`HausdorffDistanceImageFilter.GetAverageHausdorffDistance()` (`avg_hausdorff`), the mean over
*all* pixels of each mask of the distance to the nearest pixel of the other (0 inside the overlap),
averaged over the two directions; and its Hausdorff distance (`hausdorff_itk`), the largest such
distance: the reference table's "HD" column. Both are computed by SimpleITK itself.

Both masks are first cropped to their joint bounding box plus a 1-pixel margin (clipped at the
image border): erosion then sees the same neighbourhood and every distance is between pixels
inside the crop, so each value is unchanged while a 6000x4000 image costs what its lesion does.

Empty masks: both empty -> every distance 0; exactly one empty -> every distance is the image
diagonal (the largest distance the image allows; `empty="nan"` gives NaN instead). Either way the
case is flagged and the summary counts it."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SURFACE_METRICS = ("hd", "hd95", "asd_medpy", "assd_medpy", "avg_hausdorff", "hausdorff_itk")
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def joint_crop(pred: np.ndarray, truth: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    rows = np.flatnonzero((pred | truth).any(axis=1))
    cols = np.flatnonzero((pred | truth).any(axis=0))
    h, w = pred.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


def empty_case(pred: np.ndarray, truth: np.ndarray) -> str:
    """ "", "both_empty", "prediction_empty" or "truth_empty"."""
    p, t = bool(pred.any()), bool(truth.any())
    if p and t:
        return ""
    return "both_empty" if not (p or t) else "prediction_empty" if t else "truth_empty"


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_FOUR_CONNECTED, iterations=1)


def directed_surface_distances(source: np.ndarray, target: np.ndarray, spacing=None) -> np.ndarray:
    """Distance from every surface pixel of `source` to the nearest surface pixel of `target`."""
    to_target = ndimage.distance_transform_edt(~_surface(target), sampling=spacing)
    return to_target[_surface(source)]


def itk_hausdorff(pred: np.ndarray, truth: np.ndarray, spacing=None) -> tuple[float, float]:
    """SimpleITK's HausdorffDistanceImageFilter on two non-empty masks, as the reference scored:
    (average Hausdorff distance, Hausdorff distance), both over *all* pixels of each mask (a
    region distance: a prediction boundary inside the lesion costs nothing here)."""
    images = []
    for mask in (pred, truth):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        if spacing is not None:
            image.SetSpacing((float(spacing[1]), float(spacing[0])))  # ITK: (x, y)
        images.append(image)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(*images)
    return float(hausdorff.GetAverageHausdorffDistance()), float(hausdorff.GetHausdorffDistance())


def surface_metrics(pred: np.ndarray, truth: np.ndarray, spacing=None, empty: str = "diagonal") -> dict:
    """HD, HD95, MedPy's ASD and ASSD, and ITK's average Hausdorff distance of 2-D boolean masks;
    `spacing` is the (row, column) size of a pixel."""
    case = empty_case(pred, truth)
    if case == "both_empty":
        return dict.fromkeys(SURFACE_METRICS, 0.0)
    if case:
        sy, sx = (1.0, 1.0) if spacing is None else spacing
        value = math.hypot(pred.shape[0] * sy, pred.shape[1] * sx) if empty == "diagonal" else math.nan
        return dict.fromkeys(SURFACE_METRICS, value)
    window = joint_crop(pred, truth)
    p, t = pred[window], truth[window]
    forward = directed_surface_distances(p, t, spacing)  # prediction surface -> truth surface
    backward = directed_surface_distances(t, p, spacing)
    both = np.concatenate([forward, backward])
    average, region = itk_hausdorff(p, t, spacing)
    return {
        "hd": float(max(forward.max(), backward.max())),
        "hd95": float(np.percentile(both, 95)),
        "asd_medpy": float(forward.mean()),
        "assd_medpy": float(both.mean()),
        "avg_hausdorff": average,
        "hausdorff_itk": region,
    }
