"""Per-image segmentation metrics (MedPy for surface distances), aggregation and tables."""

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
