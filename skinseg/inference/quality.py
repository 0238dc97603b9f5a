"""Which masks to distrust: per-image checks and a confidence score from the model's own output.

The confidence is the share of decided pixels in what the network calls lesion or cannot decide:
lesion pixels (p > 0.5) / (lesion pixels + undecided pixels, 0.1 < p < 0.9), at the network's
input size. It is 1 when the lesion is outlined by probabilities near 0 and 1, and falls as a wide
band of doubt surrounds (or replaces) it: the blurred, over-wide or fragmented outlines that
another clinic's images produce. One pass suffices (with TTA, the averaged map carries the flips'
disagreement too). Chosen among three scores (this one, the mask's soft Dice with its
probabilities, the mean probability margin) on half of 1,694 images from other sources than the
scoring model's training set, and validated on the other half (BENCHMARKS.md, "Per-image
confidence"): Spearman 0.78 with the real Dice; the flag threshold is the chosen half's lowest
decile, and the masks it flags on the other half score 0.31 Dice below the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Masks less confident than this are flagged for review: the lowest decile's bound on the
# selection half of the cross-source validation set (BENCHMARKS.md).
FLAG_BELOW = 0.31
DECIDED = (0.1, 0.9)  # probabilities outside this band are decided


@dataclass(frozen=True)
class MaskQuality:
    area_fraction: float  # lesion pixels / image pixels, at the original size
    touches_border: bool  # the mask reaches the image's edge (a lesion larger than the frame?)
    components: int  # connected lesion regions (8-connected)
    confidence: float  # decided share of lesion-or-undecided pixels, in [0, 1]

    @property
    def flagged(self) -> bool:
        return self.confidence < FLAG_BELOW

    def row(self) -> dict:
        return {
            "area_fraction": round(self.area_fraction, 6),
            "touches_border": int(self.touches_border),
            "components": self.components,
            "confidence": round(self.confidence, 4),
            "flagged": int(self.flagged),
        }


def confidence(probabilities: np.ndarray) -> float:
    """Lesion pixels / (lesion pixels + undecided pixels); 1.0 for a map decided everywhere with
    no lesion (a confident "nothing here")."""
    lesion = int(np.count_nonzero(probabilities > 0.5))
    undecided = int(np.count_nonzero((probabilities > DECIDED[0]) & (probabilities < DECIDED[1])))
    return lesion / (lesion + undecided) if lesion + undecided else 1.0


def assess(prediction, mask: np.ndarray) -> MaskQuality:
    """`prediction`: a segmenter.Prediction; `mask`: the mask written for it (original size)."""
    edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    components = int(ndimage.label(mask, structure=np.ones((3, 3)))[1])
    return MaskQuality(
        area_fraction=float(mask.mean()),
        touches_border=bool(edge),
        components=components,
        confidence=confidence(prediction.at_input),
    )
