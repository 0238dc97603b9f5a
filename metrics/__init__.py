"""Per-image segmentation metrics (MedPy for surface distances), aggregation and tables."""

from metrics.aggregate import summarize
from metrics.overlap import overlap_metrics
from metrics.per_image import METRICS, ShapeMismatchError, image_metrics
from metrics.surface import surface_metrics

__all__ = [
    "METRICS",
    "ShapeMismatchError",
    "image_metrics",
    "overlap_metrics",
    "summarize",
    "surface_metrics",
]
