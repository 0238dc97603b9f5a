"""Per-image segmentation metrics and their aggregation: the maths only (reports are written by
skinseg.evaluation). Surface distances are computed with SciPy's distance transform under MedPy's
definitions, and the average Hausdorff distance by SimpleITK; MedPy and the ISIC challenge's
scorer are the test oracles (equal to 1e-9), not run-time dependencies of this code path."""

from skinseg.metrics.aggregate import summarize
from skinseg.metrics.overlap import overlap_metrics
from skinseg.metrics.per_image import METRICS, ShapeMismatchError, image_metrics
from skinseg.metrics.surface import surface_metrics

__all__ = [
    "METRICS",
    "ShapeMismatchError",
    "image_metrics",
    "overlap_metrics",
    "summarize",
    "surface_metrics",
]
