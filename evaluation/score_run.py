"""One run's best network on its test split: RUN/eval/per_image.csv, summary.json and cases.png.

By default every prediction is scored at its image's original size, as the ISIC challenge does:
the probabilities are resized back onto the original pixels, then thresholded, and compared with
the mask as stored. `at="input"` scores at the model's input size instead (against the mask
resampled like the image), as the reference table did.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.image_io import read_image, read_mask, resize_mask, to_original

log = logging.getLogger("skinseg")

SUMMARY_VERSION = 2
RESOLUTIONS = ("original", "input")


class EvaluationError(RuntimeError):
    pass


@dataclass(frozen=True)
class EvalSettings:
    """What a summary was computed with; results with other settings are not up to date."""

    at: str = "original"
    tta: bool = False
    threshold: float = 0.5
    empty: str = "diagonal"
    data: tuple[str, ...] | None = None
    spacing: str | None = None

    def to_json(self) -> dict:
        return {**asdict(self), "data": list(self.data) if self.data else None, "version": SUMMARY_VERSION}


class _TimedForward:
    """Counts the model's own time (not decoding), leaving out the first, tracing call."""

    def __init__(self, forward):
        self.forward, self.model = forward, forward.model
        self.seconds, self.images, self._calls = 0.0, 0, 0

    def __call__(self, images):
        start = time.perf_counter()
        out = self.forward(images)
        if self._calls:
            self.seconds += time.perf_counter() - start
            self.images += len(images)
        self._calls += 1
        return out


def _loader(size, preprocessing, keep_original: bool):
    from data_pipeline.preprocess import prepare_image

    def load(pair):
        decoded = read_image(pair.image, min_size=size)
        truth = read_mask(pair.mask)
        if truth.original_size != decoded.original_size:
            (ih, iw), (mh, mw) = decoded.original_size, truth.original_size
            raise DataError(f"{pair.mask}: mask is {mw}x{mh} but its image is {iw}x{ih}")
        at_input = resize_mask(truth.array, size, decoded.covers)
        extra = (truth.array if keep_original else None, at_input, decoded.original_size, decoded.covers)
        return prepare_image(decoded.array, size, preprocessing), extra

    return load


def masks_to_score(forward, pairs, preprocessing, settings: EvalSettings, batch_size=16, spacing_of=None):
    """Yields (pair, prediction, truth, spacing, probabilities, mask at input size): the boolean
    masks compared at the resolution `settings.at` names, with the spacing of that resolution."""
    from models.inference import stream_predictions

    size = (forward.model.input_shape[1], forward.model.input_shape[2])
    spacing_of = spacing_of or (lambda _id: None)
    load = _loader(size, preprocessing, settings.at == "original")
    for pair, prob, extra in stream_predictions(
        forward, pairs, load, batch_size=batch_size, tta=settings.tta
    ):
        if prob is None:
            raise extra
        truth, at_input, original_size, covers = extra
        spacing = spacing_of(pair.id)
        if settings.at == "original":
            pred = to_original(prob, original_size, covers) > settings.threshold
        else:
            pred, truth = prob > settings.threshold, at_input
            if spacing is not None:  # an input pixel spans covers / size original pixels
                spacing = (spacing[0] * covers[0] / size[0], spacing[1] * covers[1] / size[1])
        yield pair, pred, truth, spacing, prob, at_input


def score_pairs(model, pairs, preprocessing, settings: EvalSettings, loss_fn, batch_size=16, spacing_of=None):
    """Per-image rows (metrics, pixel counts, loss) and the model's ms/image."""
    from metrics import ShapeMismatchError, image_metrics
    from models.inference import Forward

    forward = _TimedForward(Forward(model))
    rows = []
    for pair, pred, truth, spacing, prob, at_input in masks_to_score(
        forward, pairs, preprocessing, settings, batch_size, spacing_of
    ):
        try:
            metrics = image_metrics(pred, truth, spacing=spacing, empty=settings.empty)
        except ShapeMismatchError as err:
            raise EvaluationError(f"{pair.mask}: {err}") from None
        loss = float(loss_fn(at_input[None, :, :, None].astype(np.float32), prob[None, :, :, None]))
        rows.append(
            {
                "id": pair.id,
                "image": pair.image,
                **metrics,
                "pred_pixels": int(pred.sum()),
                "truth_pixels": int(truth.sum()),
                "loss": loss,
            }
        )
    ms = 1000 * forward.seconds / forward.images if forward.images else None
    return rows, ms


def per_image_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def case_figure(model, pairs, rows, preprocessing, settings: EvalSettings, path: str, title: str) -> None:
    """Best, median and worst test image (by Dice), drawn at their original size."""
    from data_pipeline.preprocess import prepare_image
    from metrics.figures import case_grid, overlay
    from models.inference import Forward, input_size, predict_probabilities

    size = input_size(model)
    forward = Forward(model)
    ranked = sorted(rows, key=lambda r: r["dice"], reverse=True)
    cases = []
    for label, row in (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])):
        pair = next(p for p in pairs if p.id == row["id"])
        image = read_image(pair.image).array
        truth = read_mask(pair.mask).array
        model_input = prepare_image(image, size, preprocessing).astype(np.float32)[None] / 255.0
        prob = predict_probabilities(forward, model_input, settings.tta)[0]
        pred = to_original(prob, truth.shape) > settings.threshold
        cases.append((f"{label}: {row['id']}", row["dice"], overlay(image, truth, pred)))
    case_grid(cases, path, title)


def load_test_pairs(run_dir: str, config, data, skip_bad: bool):
    """The run's stored test split, or the test (or only) split of `data`."""
    from data_pipeline.discovery import discover_pairs
    from data_pipeline.split import read_split
    from training.run import usable_pairs

    if data:
        found = discover_pairs(data[0], data[1] if len(data) > 1 else None)
        name = "test" if "test" in found.splits else "all" if "all" in found.splits else None
        if name is None:
            raise EvaluationError(f"{data[0]}: no test split (splits: {', '.join(found.splits)})")
        pairs, _ = usable_pairs(
            found.splits[name], found.errors_of(name), config.replace(skip_bad=skip_bad), "test"
        )
        return pairs
    split_path = os.path.join(run_dir, "split.json")
    if not os.path.exists(split_path):
        raise EvaluationError(f"{split_path}: missing; is {run_dir} a run folder of train.py?")
    pairs = read_split(split_path)["test"]
    if not pairs:
        raise EvaluationError(f"{run_dir}: its data set had no test split; pass --data PATH")
    return pairs


def _history_losses(run_dir: str, best_epoch: int | None) -> tuple[float | None, float | None]:
    from training.callbacks import read_history

    rows = read_history(os.path.join(run_dir, "history.csv"))
    if not rows:
        return None, None
    at_best = next((r.get("loss") for r in rows if r["epoch"] == best_epoch), None)
    return rows[-1].get("loss"), at_best


def evaluate_run(
    run_dir: str,
    settings: EvalSettings = EvalSettings(),
    *,
    batch_size: int = 16,
    skip_bad: bool = False,
    figures: bool = True,
) -> dict:
    """Per-image CSV and summary JSON in RUN/eval/; returns the summary."""
    import keras

    from data_pipeline.atomic import read_json, write_json, write_text
    from evaluation.spacing import parse_spacing
    from losses import get_loss
    from metrics import summarize
    from models.inference import input_size, load_segmenter
    from training.config import RunConfig

    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise EvaluationError(f"{config_path}: missing; is {run_dir} a run folder of train.py?")
    config = RunConfig.load(config_path)
    model_path = os.path.join(run_dir, "best.keras")
    model = load_segmenter(model_path)
    pairs = load_test_pairs(run_dir, config, settings.data, skip_bad)
    rows, ms = score_pairs(
        model,
        pairs,
        config.preprocessing,
        settings,
        get_loss(config.loss),
        batch_size,
        parse_spacing(settings.spacing),
    )
    state_path = os.path.join(run_dir, "resume", "state.json")
    best_epoch = read_json(state_path).get("best_epoch") if os.path.exists(state_path) else None
    final_loss, best_loss = _history_losses(run_dir, best_epoch)
    summary = summarize(rows)
    summary.update(
        run=os.path.basename(os.path.normpath(run_dir)),
        model=config.model,
        model_path=model_path,
        params=int(model.count_params()),
        test_loss=float(np.mean([r["loss"] for r in rows])),
        train_loss=best_loss,
        train_loss_final=final_loss,
        best_epoch=best_epoch,
        input_size=list(input_size(model)),
        ms_per_image=ms,
        settings=settings.to_json(),
    )
    out = os.path.join(run_dir, "eval")
    write_text(os.path.join(out, "per_image.csv"), per_image_csv(rows))
    write_json(os.path.join(out, "summary.json"), summary)
    if figures:
        case_figure(
            model, pairs, rows, config.preprocessing, settings, os.path.join(out, "cases.png"), summary["run"]
        )
    keras.backend.clear_session()
    return summary
