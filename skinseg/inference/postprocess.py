"""The step from probabilities to a mask, chosen on the validation split as nnU-Net chooses its
post-processing: the decision threshold, then keeping the largest connected component, then
filling holes, each kept only when it raises the validation Dice by more than `MIN_GAIN`.

The choice is stored in the run folder (postprocess.json) and used by evaluation, prediction and
beside the exports, so every consumer turns a probability map into the same mask. The test split is
never looked at here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from skinseg.core.atomic import write_json
from skinseg.core.errors import RunFolderError
from skinseg.core.run_folder import RunFolder, file_digest, read_record
from skinseg.metrics.overlap import overlap_metrics

log = logging.getLogger("skinseg")

# Thresholds tried; 0.5 is the untuned default every other candidate must beat.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.801, 0.05))
# A step must earn this much mean validation Dice: below it, the difference is noise on ~100 images
# and a fixed rule (threshold 0.5, no morphology) is the safer bet on another clinic's images.
MIN_GAIN = 0.002


# What a postprocess.json may hold: the step, how it was chosen, and the network it was chosen for.
RECORD_KEYS = frozenset({"threshold", "largest_component", "fill_holes", "chosen_on", "network_sha256"})


@dataclass(frozen=True)
class PostProcessing:
    threshold: float = 0.5
    largest_component: bool = False
    fill_holes: bool = False
    # How it was chosen: validation Dice of each candidate, number of images (record only).
    chosen_on: dict = field(default_factory=dict, compare=False)

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """A boolean mask from a (H, W) probability map."""
        mask = np.asarray(probabilities) > self.threshold
        if self.largest_component and mask.any():
            labels, count = ndimage.label(mask)
            if count > 1:
                sizes = np.bincount(labels.ravel())
                sizes[0] = 0
                mask = labels == int(np.argmax(sizes))
        if self.fill_holes:
            mask = ndimage.binary_fill_holes(mask)
        return mask

    def describe(self) -> str:
        steps = [f"threshold {self.threshold:g}"]
        if self.largest_component:
            steps.append("largest component")
        if self.fill_holes:
            steps.append("holes filled")
        return ", ".join(steps)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "postprocess.json") -> PostProcessing:
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            unknown = sorted(set(data) - RECORD_KEYS)
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(unknown)}")
            threshold = data["threshold"]
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
                raise ValueError(f"threshold must be a number in [0, 1], not {threshold!r}")
            threshold = float(threshold)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold {threshold} is not in [0, 1]")
            steps = {key: data.get(key, False) for key in ("largest_component", "fill_holes")}
            for key, value in steps.items():
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, not {value!r}")
            return cls(threshold=threshold, chosen_on=dict(data.get("chosen_on", {})), **steps)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: not a post-processing record ({err})") from None


def _mean_dice(masks: list[np.ndarray], truths: list[np.ndarray]) -> float:
    return float(np.mean([overlap_metrics(m, t)["dice"] for m, t in zip(masks, truths)]))


def choose(probabilities: list[np.ndarray], truths: list[np.ndarray]) -> PostProcessing:
    """The post-processing that maximises mean Dice over (probability map, true mask) pairs,
    greedily: threshold first, then each morphological step on top of it."""
    if not probabilities:
        return PostProcessing(chosen_on={"images": 0, "note": "no validation images: defaults kept"})
    truths = [np.asarray(t, bool) for t in truths]
    scores = {t: _mean_dice([p > t for p in probabilities], truths) for t in THRESHOLDS}
    best_t = max(scores, key=scores.get)
    threshold = best_t if scores[best_t] > scores[0.5] + MIN_GAIN else 0.5
    chosen = PostProcessing(threshold=threshold)
    current = scores[threshold]
    steps = {}
    for step in ("largest_component", "fill_holes"):
        trial = PostProcessing(**{**asdict(chosen), step: True, "chosen_on": {}})
        score = _mean_dice([trial.apply(p) for p in probabilities], truths)
        steps[step] = score
        if score > current + MIN_GAIN:
            chosen, current = trial, score
    record = {
        "images": len(probabilities),
        "dice_by_threshold": {f"{t:g}": round(s, 5) for t, s in scores.items()},
        "dice_with_step": {k: round(v, 5) for k, v in steps.items()},
        "dice_default": round(scores[0.5], 5),
        "dice_chosen": round(current, 5),
        "min_gain": MIN_GAIN,
    }
    return PostProcessing(chosen.threshold, chosen.largest_component, chosen.fill_holes, record)


def read_chosen(run: RunFolder, digest: str | None = None) -> PostProcessing | None:
    """The PostProcessing chosen for the run's best.keras (`digest`: its sha256, when the caller
    has it already), or None when there is none to trust: not chosen yet, chosen for another
    network (the record names the digest of the one it was chosen for), or damaged (it is derived:
    evaluation chooses again and replaces it)."""
    if not os.path.exists(run.postprocess_path) or not os.path.exists(run.best_network):
        return None
    try:
        data = read_record(run.postprocess_path)
        if not isinstance(data, dict):
            raise ValueError(f"{run.postprocess_path}: not a JSON object")
        if data.get("network_sha256") != (digest or file_digest(run.best_network)):
            return None
        return PostProcessing.from_json(data, run.postprocess_path)
    except (ValueError, RunFolderError) as err:
        log.warning("%s; ignored (it is chosen again on the validation split)", err)
        return None


def write_chosen(run: RunFolder, chosen: PostProcessing, digest: str | None = None) -> None:
    """RUN/postprocess.json naming the best.keras it was chosen for (`digest`; default: the one
    there now)."""
    digest = digest or file_digest(run.best_network)
    write_json(run.postprocess_path, {**chosen.to_json(), "network_sha256": digest})
