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

from skinseg.data_pipeline.checks import size_mismatch
from skinseg.data_pipeline.errors import DataError
from skinseg.data_pipeline.image_io import content_box, read_image, read_mask, resize_mask, to_original

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
    threshold: float | None = None  # None: the run's post-processing, chosen on its validation split
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
    from skinseg.data_pipeline.preprocess import prepare_image

    def load(pair):
        decoded = read_image(pair.image, min_size=size)
        truth = read_mask(pair.mask)
        if truth.original_size != decoded.original_size:
            raise DataError(f"{pair.mask}: {size_mismatch(decoded, truth)}")
        at_input = resize_mask(truth.array, size, decoded.covers, preprocessing.fit)
        extra = (truth.array if keep_original else None, at_input, decoded.original_size, decoded.covers)
        return prepare_image(decoded.array, size, preprocessing), extra

    return load


def masks_to_score(
    forward, pairs, preprocessing, settings: EvalSettings, batch_size=16, spacing_of=None, post=None
):
    """Yields (pair, prediction, truth, spacing, probabilities, mask at input size): the boolean
    masks compared at the resolution `settings.at` names, with the spacing of that resolution.
    `post` (a PostProcessing) turns probabilities into masks; an explicit `settings.threshold`
    replaces it."""
    from skinseg.evaluation.postprocess import PostProcessing
    from skinseg.models.inference import stream_predictions

    if settings.threshold is not None:
        post = PostProcessing(threshold=settings.threshold)
    elif post is None:
        raise ValueError("masks_to_score: give settings.threshold or post (the run's PostProcessing)")

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
            pred = post.apply(to_original(prob, original_size, covers, preprocessing.fit))
        else:
            pred, truth = post.apply(prob), at_input
            if spacing is not None:  # an input pixel spans covers / (the image's part of it) pixels
                _, _, h, w = content_box(covers, size, preprocessing.fit)
                spacing = (spacing[0] * covers[0] / h, spacing[1] * covers[1] / w)
        yield pair, pred, truth, spacing, prob, at_input


def score_pairs(
    model, pairs, preprocessing, settings: EvalSettings, loss_fn, batch_size=16, spacing_of=None, post=None
):
    """Per-image rows (metrics, pixel counts, loss) and the model's ms/image."""
    from skinseg.metrics import ShapeMismatchError, image_metrics
    from skinseg.models.inference import Forward

    forward = _TimedForward(Forward(model))
    rows = []
    for pair, pred, truth, spacing, prob, at_input in masks_to_score(
        forward, pairs, preprocessing, settings, batch_size, spacing_of, post
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


def case_figure(model, pairs, rows, preprocessing, post, tta: bool, path: str, title: str) -> None:
    """Best, median and worst test image (by Dice), drawn at their original size."""
    from skinseg.data_pipeline.preprocess import prepare_image
    from skinseg.metrics.figures import case_grid, overlay
    from skinseg.models.inference import Forward, input_size, predict_probabilities

    size = input_size(model)
    forward = Forward(model)
    ranked = sorted(rows, key=lambda r: r["dice"], reverse=True)
    cases = []
    for label, row in (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])):
        pair = next(p for p in pairs if p.id == row["id"])
        image = read_image(pair.image).array
        truth = read_mask(pair.mask).array
        model_input = prepare_image(image, size, preprocessing).astype(np.float32)[None] / 255.0
        prob = predict_probabilities(forward, model_input, tta)[0]
        pred = post.apply(to_original(prob, truth.shape, fit=preprocessing.fit))
        cases.append((f"{label}: {row['id']}", row["dice"], overlay(image, truth, pred)))
    case_grid(cases, path, title)


def load_test_pairs(run, config, data, skip_bad: bool, allow_overlap: bool = False):
    """The run's stored test split, or the test (or only) split of `data`. Images the run trained
    or selected its model on (by ID or by pixels) are an error unless `allow_overlap`."""
    from skinseg.data_pipeline.checks import usable_pairs
    from skinseg.data_pipeline.discovery import discover_pairs
    from skinseg.data_pipeline.leakage import overlap_with_record

    if data:
        found = discover_pairs(data[0], data[1] if len(data) > 1 else None)
        name = "test" if "test" in found.splits else "all" if "all" in found.splits else None
        if name is None:
            raise EvaluationError(f"{data[0]}: no test split (splits: {', '.join(found.splits)})")
        size = (config.image_size, config.image_size)
        infos, _ = usable_pairs(found.splits[name], found.errors_of(name), size, skip_bad, "test")
        seen = overlap_with_record(infos, run.read_split_record())
        if seen and not allow_overlap:
            raise EvaluationError(
                f"{seen[0]}: the run trained or selected its model on this image ({len(seen)} of the "
                f"{len(infos)} test images, by ID or by pixels); a test score on them would be a training "
                "score. Pass --allow-overlap to score them anyway"
            )
        if seen:
            log.warning("scoring %d image(s) the run trained on (--allow-overlap)", len(seen))
        return [info.pair for info in infos], len(seen)
    if not os.path.exists(run.split_path):
        raise EvaluationError(f"{run.split_path}: missing; is {run.path} a run folder of train.py?")
    pairs = run.read_split()["test"]
    if not pairs:
        raise EvaluationError(
            f"{run.path}: its data set had no test split (an images/masks folder pair is all training "
            "data); pass --data PATH with a test set"
        )
    allowed = len(run.read_split_record().get("allowed_overlap", []))
    return pairs, allowed


def _by_source(run, rows: list[dict]) -> dict:
    """Per data set, when the run trained on several (`--data A --data B`): each row gets its
    source's folder, and each source its own summary (its test split scored on its own)."""
    from skinseg.metrics import summarize

    record = run.read_split_record()
    sources = [source["root"] for source in record.get("sources", [])]
    if len(sources) < 2:
        return {}
    of_image = {row["image"]: sources[row["source"]] for row in record.get("test", []) if "source" in row}
    for row in rows:
        row["source"] = of_image.get(row["image"], "")
    return {
        source: summarize([row for row in rows if row["source"] == source])
        for source in sources
        if any(row["source"] == source for row in rows)
    }


def _postprocessing(run, model, settings: EvalSettings, batch_size: int, digest: str):
    """An explicit threshold as given; else the run's choice on its validation split, made now
    when training did not make it (runs of older versions, multi-worker runs, or best.keras
    replaced since). Always chosen on plain predictions: one choice per network, with or without
    --tta."""
    from skinseg.evaluation.postprocess import PostProcessing, choose_for_run

    if settings.threshold is not None:
        return PostProcessing(threshold=settings.threshold)
    chosen = run.read_postprocess(digest)
    if chosen is not None:
        return chosen
    try:
        return choose_for_run(run, model, batch_size=batch_size, digest=digest)
    except DataError as err:
        raise EvaluationError(
            f"{err}; the threshold is chosen on the run's validation split, which cannot be read. "
            "Pass --threshold 0.5 to score with a fixed threshold"
        ) from None


def run_progress(run) -> dict:
    """How far the run got: completed and configured epochs, and whether early stopping ended it."""
    state = run.read_resume_state() or {}
    completed = state.get("completed_epochs", len(run.read_history()))
    epochs = run.read_config().epochs
    return {
        "completed_epochs": completed,
        "epochs": epochs,
        "stopped_early": bool(state.get("stopped_early")),
    }


def evaluate_run(
    run_dir,
    settings: EvalSettings = EvalSettings(),
    *,
    batch_size: int = 16,
    skip_bad: bool = False,
    allow_overlap: bool = False,
    figures: bool = True,
) -> dict:
    """Per-image CSV and summary JSON in RUN/eval/; returns the summary."""
    import keras

    from skinseg.evaluation.spacing import parse_spacing
    from skinseg.losses import get_loss
    from skinseg.metrics import summarize
    from skinseg.models.inference import input_size, load_segmenter
    from skinseg.run_folder import RunFolder

    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    if not run.has_config():
        raise EvaluationError(f"{run.config_path}: missing; is {run.path} a run folder of train.py?")
    config = run.read_config()
    if not os.path.exists(run.best_network):
        raise EvaluationError(
            f"{run.best_network}: not written yet; the run has not completed an epoch "
            f"(python train.py --out {run.path} --resume continues it)"
        )
    progress = run_progress(run)
    if progress["completed_epochs"] < progress["epochs"] and not progress["stopped_early"]:
        log.warning(
            "%s: stopped after epoch %d of %d; scoring its best network so far",
            run.path,
            progress["completed_epochs"],
            progress["epochs"],
        )
    from skinseg.run_folder import file_digest

    digest = file_digest(run.best_network)  # before loading: the record names what was scored
    model = load_segmenter(run.best_network)
    pairs, overlap = load_test_pairs(run, config, settings.data, skip_bad, allow_overlap)
    post = _postprocessing(run, model, settings, batch_size, digest)
    if overlap and not settings.data:
        log.warning(
            "%s: %d of its %d test images were also in its training data (trained with --allow-overlap); "
            "their scores are not a test",
            run.path,
            overlap,
            len(pairs),
        )
    rows, ms = score_pairs(
        model,
        pairs,
        config.preprocessing,
        settings,
        get_loss(config.loss),
        batch_size,
        parse_spacing(settings.spacing),
        post,
    )
    best = run.read_best() or {}
    history = run.read_history()
    at_best = next((r.get("loss") for r in history if r["epoch"] == best.get("epoch")), None)
    summary = summarize(rows)
    by_source = _by_source(run, rows) if not settings.data else {}
    if by_source:
        summary["by_source"] = by_source
    summary.update(
        run=run.name,
        model=config.model,
        model_path=run.best_network,
        params=int(model.count_params()),
        test_loss=float(np.mean([r["loss"] for r in rows])),
        train_loss=at_best,
        train_loss_final=history[-1].get("loss") if history else None,
        best_epoch=best.get("epoch"),
        progress=progress,
        training_overlap=overlap,
        input_size=list(input_size(model)),
        ms_per_image=ms,
        settings=settings.to_json(),
        postprocess=post.to_json(),
    )
    run.write_evaluation(per_image_csv(rows), summary)
    if figures:
        case_figure(
            model, pairs, rows, config.preprocessing, post, settings.tta, run.cases_path, summary["run"]
        )
    keras.backend.clear_session()
    return summary
