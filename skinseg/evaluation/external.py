"""Any model, or masks made by any tool, scored on any labelled set, without touching a run's own
scores.

    evaluate.py --model RUN|FILE.keras|pretrained [...] --data SET   (several: their ensemble)
    evaluate.py --run RUN --data SET                                   (the same, for a run)
    evaluate.py --predictions MASKS --data SET                         (another tool's masks)

Each writes RUNS/external/<model>--<test-set digest>/ (per_image.csv, summary.json, cases.png;
with --save-probs, probabilities/ID.npz): named by what was scored and by the content of the test
set, never inside a run's eval/. `evaluate.py --all` lists them in the table, in the section of
their test set.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass

import keras
import numpy as np

from skinseg.core.atomic import read_json, write_json, write_text
from skinseg.core.errors import SkinsegError
from skinseg.core.faults import fault_point
from skinseg.core.run_folder import CASES, PER_IMAGE, SUMMARY, RunFolder, file_digest
from skinseg.data_pipeline.checks import usable_pairs
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.image_io import IMAGE_SUFFIXES, read_image, read_mask
from skinseg.data_pipeline.leakage import overlap_with_record
from skinseg.evaluation.figures import case_grid
from skinseg.evaluation.score_run import (
    EvalSettings,
    EvaluationError,
    case_figure,
    per_image_csv,
    refuse_all_empty,
    score_pairs,
    test_set_record,
)
from skinseg.evaluation.spacing import parse_spacing, spacing_digest
from skinseg.inference.description import TRAINED_ON, training_records
from skinseg.inference.overlay import overlay
from skinseg.inference.postprocess import PostProcessing
from skinseg.inference.segmenter import Segmenter
from skinseg.losses import get_loss
from skinseg.metrics import ShapeMismatchError, image_metrics, summarize
from skinseg.training.config import RunConfig, data_label

log = logging.getLogger("skinseg")

EXTERNAL = "external"  # RUNS/external/: evaluations of models (or masks) on other test sets


@dataclass(frozen=True)
class EvalFolder:
    """One external evaluation's files."""

    path: str

    per_image_path = property(lambda self: os.path.join(self.path, PER_IMAGE))
    summary_path = property(lambda self: os.path.join(self.path, SUMMARY))
    cases_path = property(lambda self: os.path.join(self.path, CASES))
    probabilities_dir = property(lambda self: os.path.join(self.path, "probabilities"))
    name = property(lambda self: os.path.basename(self.path))

    def read_summary(self) -> dict:
        data = read_json(self.summary_path)
        if not isinstance(data, dict) or not isinstance(data.get("test_set"), dict):
            raise EvaluationError(f"{self.summary_path}: not an evaluation summary of evaluate.py")
        return data

    def read_per_image(self) -> list[dict]:
        with open(self.per_image_path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def write(self, rows: list[dict], summary: dict) -> None:
        """per_image.csv, then summary.json naming it by its digest (as a run's eval/)."""
        os.makedirs(self.path, exist_ok=True)
        write_text(self.per_image_path, per_image_csv(rows))
        write_json(self.summary_path, {**summary, "per_image_sha256": file_digest(self.per_image_path)})


def external_folders(runs_dir: str) -> list[EvalFolder]:
    folder = os.path.join(runs_dir, EXTERNAL)
    if not os.path.isdir(folder):
        return []
    found = (EvalFolder(os.path.join(folder, name)) for name in sorted(os.listdir(folder)))
    return [f for f in found if os.path.isfile(f.summary_path)]


def model_label(model: str) -> str:
    """A short name for --model: pretrained, a run's name, or a file's stem (with its folder's
    name for best.keras and last.keras)."""
    if model == "pretrained" and not os.path.exists(model):
        return "pretrained"
    path = os.path.normpath(os.path.abspath(model))
    if os.path.isdir(path):
        return os.path.basename(path)
    stem = os.path.basename(path).split(".")[0]
    run = RunFolder(os.path.dirname(path))
    if run.has_config() and path == os.path.normpath(run.best_network):
        return run.name  # what --model RUN scores: one name for both
    if stem in ("best", "last"):
        return f"{os.path.basename(os.path.dirname(path))}-{stem}"
    return stem


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "model"


def folder_name(label: str, test_set: dict, settings: EvalSettings) -> str:
    """<what was scored>--<test-set digest>[--<settings>]: one folder per model, test set and
    scoring; a long label (an ensemble of many runs) is cut and made unique by its digest."""
    label = _safe(label)
    if len(label) > 80:
        label = f"{label[:60]}-{hashlib.blake2b(label.encode(), digest_size=4).hexdigest()}"
    extra = []
    if settings.at != "original":
        extra.append(f"at-{settings.at}")
    if settings.tta:
        extra.append("tta")
    if settings.threshold is not None:
        extra.append(f"t{settings.threshold:g}")
    if settings.empty != "diagonal":
        extra.append(f"empty-{settings.empty}")
    if settings.spacing:
        extra.append(f"spacing-{hashlib.blake2b(settings.spacing.encode(), digest_size=4).hexdigest()}")
    return "--".join([label, test_set["digest"][:12], *extra])


def labelled_pairs(data: tuple[str, ...], size, skip_bad: bool):
    """The test split of a data set (or all its pairs when it has no split), decode-checked:
    (pair infos, the set's name)."""
    found = discover_pairs(data[0], data[1] if len(data) > 1 else None)
    name = "test" if "test" in found.splits else "all" if "all" in found.splits else None
    if name is None:
        raise EvaluationError(f"{data[0]}: no test split (splits: {', '.join(found.splits)})")
    infos, _ = usable_pairs(found.splits[name], found.errors_of(name), size, skip_bad, "test")
    if not infos:
        raise EvaluationError(f"{data[0]}: no usable test pairs")
    return infos, data_label(RunConfig(data=(tuple(data),)))


def _run_of(path: str) -> RunFolder | None:
    """The run folder a network file belongs to, or None (a file elsewhere, the shipped model)."""
    run = RunFolder(os.path.dirname(path))
    return run if run.has_config() else None


def _trained_on(model: str, run: RunFolder | None, records: list[dict] | None) -> str:
    if run is not None:
        return data_label(RunConfig.load(run.config_path))
    if model_label(model) == "pretrained":
        return "the shipped model's data (MODEL_CARD.md)"
    if records:  # an export: the runs it was made from, as trained_on.json names them
        return f"the data of {' + '.join(r['name'] for r in records)} ({TRAINED_ON})"
    return "unknown"


def _loss_of(runs: list[RunFolder | None]) -> str:
    """The loss a test loss is measured with: the runs' training loss when every model is a run
    trained with the same one (so the column compares with the runs' own rows), else BCE."""
    names = {RunConfig.load(run.config_path).loss if run is not None else "bce" for run in runs}
    return names.pop() if len(names) == 1 else "bce"


def _check_overlap(records: list[dict], infos, allow_overlap: bool) -> int:
    """Test images any network trained or selected its model on (by ID or pixels): `records`, from
    its run folder's split.json or the trained_on.json beside an export (each member of an
    ensemble; description.training_records)."""
    seen, by = set(), []
    for record in records:
        found = overlap_with_record(infos, {"train": record["rows"]})
        if found:
            seen.update(found)
            by.append(record["name"])
    if seen and not allow_overlap:
        first = sorted(seen)[0]
        who = "the run" if len(records) == 1 else f"the ensemble's run {by[0]}"
        raise EvaluationError(
            f"{first}: {who} trained or selected its model on this image ({len(seen)} of the "
            f"{len(infos)} test images, by ID or by pixels); a test score on them would be a training "
            "score. Pass --allow-overlap to score them anyway"
        )
    if seen:
        log.warning(
            "scoring %d image(s) the run(s) %s trained on (--allow-overlap)", len(seen), ", ".join(by)
        )
    return len(seen)


def evaluate_models(
    models: list[str],
    settings: EvalSettings,
    *,
    runs_dir: str = "runs",
    batch_size: int = 16,
    skip_bad: bool = False,
    allow_overlap: bool = False,
    figures: bool = True,
    save_probs: bool = False,
    allow_empty_masks: bool = False,
) -> tuple[EvalFolder, dict]:
    """Score a model (several: their ensemble, probabilities averaged) on `settings.data`'s test
    split. Returns the evaluation folder and its summary."""
    if not settings.data:
        raise EvaluationError("an external evaluation needs --data SET (the labelled set to score on)")
    post = PostProcessing(threshold=settings.threshold) if settings.threshold is not None else None
    spacing_of = parse_spacing(settings.spacing)  # a bad value stops before the models load
    if len(models) == 1:
        segmenter = Segmenter.load(models[0], post=post, tta=settings.tta)
    else:
        segmenter = Segmenter.load_ensemble(models, post=post, tta=settings.tta)
    paths = [member.source for member in segmenter.members]  # each model's network file, resolved once
    digests = [file_digest(path) for path in paths]
    runs = [_run_of(path) for path in paths]
    infos, set_name = labelled_pairs(settings.data, segmenter.input_size, skip_bad)
    # what each network trained on, read once (split.json, or trained_on.json beside an export)
    recorded = [training_records(path, digest) for path, digest in zip(paths, digests)]
    overlap = _check_overlap([r for found in recorded for r in found or []], infos, allow_overlap)
    pairs = [info.pair for info in infos]
    for pair in pairs:  # every image has its spacing (or none has), checked before scoring
        spacing_of(pair.id)
    test_set = test_set_record(pairs, set_name)
    labels = [model_label(m) for m in models]
    label = labels[0] if len(labels) == 1 else f"ensemble{len(labels)}-" + "+".join(labels)
    folder = EvalFolder(os.path.join(runs_dir, EXTERNAL, folder_name(label, test_set, settings)))
    loss_name = _loss_of(runs)
    rows, ms = score_pairs(
        segmenter,
        pairs,
        settings,
        get_loss(loss_name),
        batch_size,
        spacing_of,
        probabilities_to=folder.probabilities_dir if save_probs else None,
    )
    refuse_all_empty(rows, settings.data[0], allow_empty_masks)
    summary = summarize(rows)
    summary.update(
        run=label,
        kind="ensemble" if len(models) > 1 else "model",
        test_set=test_set,
        trained_on=" + ".join(
            dict.fromkeys(_trained_on(m, run, found) for m, run, found in zip(models, runs, recorded))
        ),
        models=[{"model": m, "path": path, "sha256": d} for m, path, d in zip(models, paths, digests)],
        model_sha256=digests[0] if len(digests) == 1 else None,
        params=segmenter.parameters,
        test_loss=float(np.mean([r["loss"] for r in rows])),
        test_loss_kind=loss_name,
        training_overlap=overlap,
        input_size=list(segmenter.input_size),
        ms_per_image=ms,
        settings=settings.to_json(),
        spacing_digest=spacing_digest(settings.spacing),
        postprocess=segmenter.post.to_json(),
    )
    folder.write(rows, summary)
    if not save_probs:  # none of an earlier evaluation's, which another scoring may have made
        shutil.rmtree(folder.probabilities_dir, ignore_errors=True)
    fault_point("evaluate.external_scored")
    if figures:
        case_figure(segmenter, pairs, rows, folder.cases_path, f"{label} on {set_name}")
    keras.backend.clear_session()
    return folder, summary


MASK_SUFFIXES = ("", "_segmentation", "_mask", "_pred", "_prediction")


def _find_masks(folder: str, ids: list[str]) -> tuple[dict[str, str], list[str]]:
    """Predicted mask file of each ID: ID or ID_segmentation/_mask/_pred/_prediction with an image
    suffix. Returns (ID -> file, IDs without one); two files for one ID are an error."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"{folder}: --predictions is not a folder of masks")
    by_stem: dict[str, list[str]] = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in (*IMAGE_SUFFIXES, ".tif", ".tiff") and os.path.isfile(
            os.path.join(folder, name)
        ):
            by_stem.setdefault(stem, []).append(os.path.join(folder, name))
    found, missing = {}, []
    for id_ in ids:
        candidates = [path for s in MASK_SUFFIXES for path in by_stem.get(id_ + s, [])]
        if len(candidates) > 1:
            raise EvaluationError(
                f"{candidates[0]}: {len(candidates)} files in {folder} could be the mask of {id_} "
                f"({', '.join(os.path.basename(c) for c in candidates)}); keep one"
            )
        if candidates:
            found[id_] = candidates[0]
        else:
            missing.append(id_)
    return found, missing


def score_predictions(
    masks: str,
    settings: EvalSettings,
    *,
    runs_dir: str = "runs",
    skip_bad: bool = False,
    figures: bool = True,
    allow_empty_masks: bool = False,
) -> tuple[EvalFolder, dict]:
    """Masks made by any tool (a folder, matched to the test pairs by stem, at each image's
    original size) scored against `settings.data`'s test split."""
    if not settings.data:
        raise EvaluationError("--predictions needs --data SET (the labelled set the masks are of)")
    if settings.at != "original" or settings.tta or settings.threshold is not None:
        raise EvaluationError(
            "--predictions scores masks as they are, at the images' original size: --at input, --tta "
            "and --threshold do not apply"
        )
    infos, set_name = labelled_pairs(settings.data, None, skip_bad)
    pairs = [info.pair for info in infos]
    found, missing = _find_masks(os.path.abspath(masks), [p.id for p in pairs])
    if missing:
        raise EvaluationError(
            f"{masks}: no mask for {len(missing)} of the {len(pairs)} test images (e.g. {missing[0]}: "
            f"looked for {missing[0]}{{{','.join(MASK_SUFFIXES[1:])}}}.png ...); a missing prediction "
            "cannot be scored as empty silently: write an empty mask for it"
        )
    spacing_of = parse_spacing(settings.spacing) or (lambda _id: None)
    rows = []
    for pair in pairs:
        truth = read_mask(pair.mask)
        try:
            pred = read_mask(found[pair.id])
        except SkinsegError as err:
            raise EvaluationError(str(err)) from None
        if pred.original_size != truth.original_size:
            (th, tw), (ph, pw) = truth.original_size, pred.original_size
            raise EvaluationError(
                f"{found[pair.id]}: the mask is {pw}x{ph}, but {pair.mask} is {tw}x{th}; predictions are "
                "scored at each image's original size"
            )
        try:
            metrics = image_metrics(
                pred.array, truth.array, spacing=spacing_of(pair.id), empty=settings.empty
            )
        except ShapeMismatchError as err:
            raise EvaluationError(f"{found[pair.id]}: {err}") from None
        rows.append(
            {
                "id": pair.id,
                "image": pair.image,
                "prediction": found[pair.id],
                **metrics,
                "pred_pixels": int(pred.array.sum()),
                "truth_pixels": int(truth.array.sum()),
            }
        )
    refuse_all_empty(rows, settings.data[0], allow_empty_masks)
    test_set = test_set_record(pairs, set_name)
    where = os.path.normpath(os.path.abspath(masks))
    # two tools' folders of one name stay apart: the folder's path in the label
    label = f"masks-{os.path.basename(where)}-{hashlib.blake2b(where.encode(), digest_size=3).hexdigest()}"
    folder = EvalFolder(os.path.join(runs_dir, EXTERNAL, folder_name(label, test_set, settings)))
    summary = summarize(rows)
    summary.update(
        run=label,
        kind="predictions",
        test_set=test_set,
        trained_on="(masks from another tool)",
        predictions=os.path.abspath(masks),
        params=None,
        test_loss=None,
        settings=settings.to_json(),
        postprocess=None,
        mask_step="given masks",
    )
    folder.write(rows, summary)
    if figures:
        ranked = sorted(rows, key=lambda r: r["dice"], reverse=True)
        cases = []
        for tag, row in (("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])):
            pair = next(p for p in pairs if p.id == row["id"])
            image = read_image(pair.image).array
            drawn = overlay(image, read_mask(pair.mask).array, read_mask(row["prediction"]).array)
            cases.append((f"{tag}: {row['id']}", row["dice"], drawn))
        case_grid(cases, folder.cases_path, f"{label} on {set_name}")
    return folder, summary
