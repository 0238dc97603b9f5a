"""One run's best network on its test split: RUN/eval/per_image.csv, summary.json and cases.png.

By default every prediction is scored at its image's original size, as the ISIC challenge does:
the probabilities are resized back onto the original pixels, then thresholded, and compared with
the mask as stored. `at="input"` scores at the model's input size instead (against the mask
resampled like the image), as the reference table did.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np

from skinseg.core.atomic import atomic_path
from skinseg.core.errors import DataError, RunLockedError, SkinsegError
from skinseg.core.faults import fault_point
from skinseg.core.run_folder import RunFolder, file_digest
from skinseg.data_pipeline.image_io import read_image, read_mask
from skinseg.data_pipeline.split import read_split
from skinseg.evaluation.figures import case_grid
from skinseg.evaluation.spacing import parse_spacing, spacing_digest
from skinseg.inference.overlay import overlay
from skinseg.inference.postprocess import PostProcessing, read_chosen
from skinseg.inference.segmenter import Segmenter
from skinseg.inference.validation import choose_for_run
from skinseg.losses import get_loss
from skinseg.metrics import METRICS, ShapeMismatchError, image_metrics, summarize
from skinseg.training.config import RunConfig, data_label

log = logging.getLogger("skinseg")

SUMMARY_VERSION = 2
RESOLUTIONS = ("original", "input")


class EvaluationError(SkinsegError, RuntimeError):
    """A run or data set that cannot be scored as asked."""


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


class _Timed:
    """Counts the network's own time (not decoding) of a Segmenter, leaving out the first,
    tracing call."""

    def __init__(self, segmenter: Segmenter):
        self.seconds, self.images, self._calls = 0.0, 0, 0
        forward = segmenter._forward

        def timed(images):
            start = time.perf_counter()
            out = forward(images)
            if self._calls:
                self.seconds += time.perf_counter() - start
                self.images += len(images)
            self._calls += 1
            return out

        self.segmenter = segmenter.with_options()
        self.segmenter._forward = timed

    @property
    def ms_per_image(self) -> float | None:
        return 1000 * self.seconds / self.images if self.images else None


def masks_to_score(
    segmenter: Segmenter, pairs, settings: EvalSettings, batch_size=16, spacing_of=None, on_prediction=None
):
    """Yields (pair, prediction, truth, spacing, probabilities at input, true mask at input): the
    boolean masks compared at the resolution `settings.at` names, with the spacing of that
    resolution. The segmenter's mask step turns probabilities into masks; an explicit
    `settings.threshold` replaces it, and `settings.tta` decides the flips."""
    if settings.threshold is not None:
        segmenter = segmenter.with_options(post=PostProcessing(threshold=settings.threshold))
    segmenter = segmenter.with_options(tta=settings.tta)
    spacing_of = spacing_of or (lambda _id: None)
    for pair, prediction, truth, at_input in segmenter.stream_pairs(
        pairs, batch_size=batch_size, keep_original=settings.at == "original"
    ):
        if on_prediction is not None:
            on_prediction(pair, prediction)
        spacing = spacing_of(pair.id)
        if settings.at == "original":
            pred = prediction.mask
        else:
            pred, truth = prediction.mask_at_input, at_input
            if spacing is not None:
                spacing = segmenter.input_spacing(spacing, prediction.covers)
        yield pair, pred, truth, spacing, prediction.at_input, at_input


def score_pairs(
    segmenter: Segmenter,
    pairs,
    settings: EvalSettings,
    loss_fn,
    batch_size=16,
    spacing_of=None,
    probabilities_to: str | None = None,
):
    """Per-image rows (metrics, pixel counts, loss) and the network's ms/image. With
    `probabilities_to`, each image's probabilities at its original size go to
    FOLDER/ID.npz (save_probabilities)."""
    timed = _Timed(segmenter)
    rows = []
    keep = None
    if probabilities_to:
        os.makedirs(probabilities_to, exist_ok=True)

        def keep(pair, prediction):
            save_probabilities(os.path.join(probabilities_to, f"{pair.id}.npz"), prediction.probabilities)

    for pair, pred, truth, spacing, prob, at_input in masks_to_score(
        timed.segmenter, pairs, settings, batch_size, spacing_of, keep
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
    return rows, timed.ms_per_image


def refuse_all_empty(rows: list[dict], where: str, allow: bool) -> None:
    """A test set whose masks are all empty scores Dice 1.0 for a model that predicts nothing:
    never silently."""
    if rows and not allow and all(row["truth_pixels"] == 0 for row in rows):
        raise EvaluationError(
            f"{where}: every one of its {len(rows)} test masks is empty (no lesion pixel); its Dice would "
            "be 1.0 for a model that finds nothing. Check how the masks encode the lesion (python -m "
            "skinseg.data_pipeline inspect), or pass --allow-empty-masks"
        )


def save_probabilities(path: str, probabilities: np.ndarray) -> None:
    """One image's lesion probabilities at its original size, compressed: `probability`, float16
    (H, W) in [0, 1] (3 significant digits; np.load(path)["probability"])."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, probability=probabilities.astype(np.float16))


def test_set_record(pairs, name: str) -> dict:
    """What identifies a test set: its content, not its path. The digest of its pairs (ID, image
    bytes, mask bytes), so that the same images scored from two copies share a table section and a
    changed mask makes another set."""
    digest = hashlib.blake2b(digest_size=16)
    for pair in sorted(pairs, key=lambda p: p.id):
        digest.update(pair.id.encode("utf-8", "surrogateescape") + b"\0")
        for path in (pair.image, pair.mask):
            digest.update(bytes.fromhex(file_digest(path)))
    return {"name": name, "n": len(pairs), "digest": digest.hexdigest()}


def per_image_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def case_figure(segmenter: Segmenter, pairs, rows, path: str, title: str) -> None:
    """Best, median and worst test image (by Dice), drawn at their original size."""
    ranked = sorted(rows, key=lambda r: r["dice"], reverse=True)
    cases = []
    for label, row in (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])):
        pair = next(p for p in pairs if p.id == row["id"])
        image = read_image(pair.image).array
        truth = read_mask(pair.mask).array
        pred = segmenter.segment(image)
        cases.append((f"{label}: {row['id']}", row["dice"], overlay(image, truth, pred)))
    case_grid(cases, path, title)


def load_test_pairs(run):
    """The run's stored test split and how many of its images it was allowed to train on too
    (--allow-overlap at training). Other data sets are scored by evaluation.external."""
    if not os.path.exists(run.split_path):
        raise EvaluationError(f"{run.split_path}: missing; is {run.path} a run folder of train.py?")
    pairs = read_split(run.split_path)["test"]
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


def _postprocessing(
    run: RunFolder, segmenter: Segmenter, settings: EvalSettings, batch_size: int, digest: str
) -> PostProcessing:
    """An explicit threshold as given; else the run's choice on its validation split, made now
    when training did not make it (runs of older versions, multi-worker runs, or best.keras
    replaced since). Always chosen on plain predictions: one choice per network, with or without
    --tta."""
    if settings.threshold is not None:
        return PostProcessing(threshold=settings.threshold)
    chosen = read_chosen(run, digest)
    if chosen is not None:
        return chosen
    try:
        fixed = RunConfig.load(run.config_path).mask_step == "fixed"
        return choose_for_run(run, segmenter, batch_size=batch_size, digest=digest, fixed=fixed)
    except DataError as err:
        raise EvaluationError(
            f"{err}; the threshold is chosen on the run's validation split, which cannot be read. "
            "Pass --threshold 0.5 to score with a fixed threshold"
        ) from None


def run_progress(run) -> dict:
    """How far the run got: completed and configured epochs, and whether early stopping ended it."""
    state = run.read_resume_state() or {}
    completed = state.get("completed_epochs", len(run.read_history()))
    epochs = RunConfig.load(run.config_path).epochs
    return {
        "completed_epochs": completed,
        "epochs": epochs,
        "stopped_early": bool(state.get("stopped_early")),
    }


def own_test_set_name(run: RunFolder, config: RunConfig) -> str:
    """The name a run's own test split goes by in the table: its data set, or the fold of a
    cross-validation (scored out of fold)."""
    if config.folds:
        return f"{data_label(config)}, fold {config.fold} of {config.folds} (out of fold)"
    return data_label(config)


def evaluation_is_current(
    run: RunFolder, settings: dict, figures: bool = False, save_probs: bool = False
) -> bool:
    """Results newer than the network, computed with the same settings (and, with `figures`,
    their figure drawn: a kill between the summary and the figure leaves it to redo)."""
    if not all(os.path.exists(p) for p in (run.summary_path, run.best_network, run.per_image_path)):
        return False
    if figures and not os.path.exists(run.cases_path):
        return False
    if save_probs and not os.path.isdir(os.path.join(run.eval_dir, "probabilities")):
        return False
    summary = run.read_summary()
    # By content, not by names and times (cp -p, rsync -a and tar restore old times): the network,
    # the per-image table the summary was written with, the test pairs and the spacing.
    if summary.get("model_sha256") != file_digest(run.best_network):
        return False
    if summary.get("per_image_sha256") != file_digest(run.per_image_path):
        return False
    if summary.get("spacing_digest") != spacing_digest(settings.get("spacing")):
        return False
    if not set(METRICS) <= set(summary.get("metrics", {})):  # scored before a metric was added
        return False
    if "test_set" not in summary:  # scored before results were grouped by test set (version 0.3)
        return False
    try:
        pairs, _ = load_test_pairs(run)
        digest = test_set_record(pairs, summary["test_set"]["name"])["digest"]
    except (SkinsegError, OSError) as err:
        # the test data cannot be read now (moved, unmounted): the recorded scores stand, as they
        # did before results were checked by content, and scoring again would fail anyway
        log.warning(
            "%s: its test pairs cannot be read to check them (%s); its recorded scores are kept",
            run.path,
            err,
        )
        digest = summary["test_set"]["digest"]
    if digest != summary["test_set"]["digest"]:
        return False
    if settings.get("threshold") is None:  # scored with the run's choice: is it still the one?
        chosen, used = read_chosen(run), summary.get("postprocess")
        if chosen is None or used is None or PostProcessing.from_json(used) != chosen:
            return False
    return summary.get("settings") == settings


def evaluate_run(
    run_dir,
    settings: EvalSettings = EvalSettings(),
    *,
    batch_size: int = 16,
    skip_bad: bool = False,
    allow_overlap: bool = False,
    figures: bool = True,
    save_probs: bool = False,
    allow_empty_masks: bool = False,
) -> dict:
    """Per-image CSV and summary JSON in RUN/eval/ (the run's own test split); returns the
    summary. Another data set is scored by evaluation.external (evaluate.py --run RUN --data SET),
    never into the run's own eval/. The run is locked while it is scored: a run that train.py
    holds (still training) is refused, not written into."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    if not run.has_config():
        raise EvaluationError(f"{run.config_path}: missing; is {run.path} a run folder of train.py?")
    RunConfig.load(run.config_path)  # another program's config.json: refused before a lock file is made
    try:
        run.lock()
    except RunLockedError:
        raise EvaluationError(
            f"{run.path} is in use by another process (train.py training it, or another evaluation): "
            "evaluate it when that is done"
        ) from None
    try:
        return _evaluate_run(run, settings, batch_size, figures, save_probs, allow_empty_masks)
    finally:
        run.unlock()


def _evaluate_run(run: RunFolder, settings, batch_size, figures, save_probs, allow_empty_masks) -> dict:
    if settings.data:
        raise EvaluationError(
            f"{run.path}: evaluate_run scores the run's own test split; score it on {settings.data[0]} "
            "with evaluation.external.evaluate_models (its eval/ keeps the run's own scores)"
        )
    if not run.has_config():
        raise EvaluationError(f"{run.config_path}: missing; is {run.path} a run folder of train.py?")
    config = RunConfig.load(run.config_path)
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
    spacing_of = parse_spacing(settings.spacing)  # a bad value stops before the network loads
    digest = file_digest(run.best_network)  # before loading: the record names what was scored
    segmenter = Segmenter.from_run(run.path, tta=settings.tta, post=PostProcessing())  # chosen below
    pairs, overlap = load_test_pairs(run)
    for pair in pairs:  # every image has its spacing (or none has), checked before scoring
        spacing_of(pair.id)
    segmenter = segmenter.with_options(post=_postprocessing(run, segmenter, settings, batch_size, digest))
    if overlap:
        log.warning(
            "%s: %d of its %d test images were also in its training data (trained with --allow-overlap); "
            "their scores are not a test",
            run.path,
            overlap,
            len(pairs),
        )
    rows, ms = score_pairs(
        segmenter,
        pairs,
        settings,
        get_loss(config.loss),
        batch_size,
        spacing_of,
        probabilities_to=os.path.join(run.eval_dir, "probabilities") if save_probs else None,
    )
    refuse_all_empty(rows, run.path, allow_empty_masks)
    best = run.read_best() or {}
    history = run.read_history()
    at_best = next((r.get("loss") for r in history if r["epoch"] == best.get("epoch")), None)
    summary = summarize(rows)
    by_source = _by_source(run, rows)
    if by_source:
        summary["by_source"] = by_source
    summary.update(
        run=run.name,
        kind="run",
        test_set=test_set_record(pairs, own_test_set_name(run, config)),
        trained_on=data_label(config),
        model=config.model,
        model_path=run.best_network,
        model_sha256=digest,
        params=segmenter.parameters,
        test_loss=float(np.mean([r["loss"] for r in rows])),
        train_loss=at_best,
        train_loss_final=history[-1].get("loss") if history else None,
        best_epoch=best.get("epoch"),
        progress=progress,
        training_overlap=overlap,
        input_size=list(segmenter.input_size),
        ms_per_image=ms,
        settings=settings.to_json(),
        postprocess=segmenter.post.to_json(),
        capacity=config.capacity,
        spacing_digest=spacing_digest(settings.spacing),
    )
    run.write_evaluation(per_image_csv(rows), summary)
    if not save_probs:  # an earlier evaluation's probabilities would not be these scores'
        shutil.rmtree(os.path.join(run.eval_dir, "probabilities"), ignore_errors=True)
    fault_point("evaluate.run_scored")
    if figures:
        case_figure(segmenter, pairs, rows, run.cases_path, summary["run"])
    keras.backend.clear_session()
    return summary
