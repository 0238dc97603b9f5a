"""What a saved network needs, read from the files beside it, without loading it (and without
TensorFlow): the preprocessing its images get and the mask step chosen for it.

A saved model is described the same way wherever it lives: a `.keras` file with
`preprocessing.json` and `postprocess.json` beside it. A run folder is one such place (its
best.keras, the files written by training); the shipped model's folder is another. An export
(inference/export.py) writes the same two files beside its SavedModel and TFLite graphs, for
whoever serves them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from skinseg.core.atomic import read_json
from skinseg.core.errors import SkinsegError
from skinseg.core.run_folder import CONFIG, POSTPROCESS, PREPROCESSING, RunFolder, file_digest
from skinseg.data_pipeline.preprocess import Preprocessing
from skinseg.inference.postprocess import PostProcessing, read_chosen

log = logging.getLogger("skinseg")

# The model shipped with the project: `--model pretrained` (see models/pretrained/MODEL_CARD.md).
PRETRAINED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "pretrained", "skinseg-isic.keras"
)


# Name prefix of a model saved with its per-image preprocessing inside (inference.portable); here,
# where reading it needs no TensorFlow.
PORTABLE = "skinseg_portable"


class PredictError(SkinsegError, RuntimeError):
    """A model, its side files, or inputs of a prediction that cannot be used as given."""


@dataclass(frozen=True)
class Described:
    """Where a saved network is and what it needs: its preprocessing and its mask step."""

    path: str
    preprocessing: Preprocessing
    post: PostProcessing
    post_source: str | None  # the postprocess.json used, or None (threshold 0.5)
    recorded: bool = True  # False: no preprocessing.json or config.json beside it (a file on its own)


def describe(model: str, *, read_post: bool = True) -> Described:
    """Resolve `--model` (pretrained, a run folder, a .keras file) to the network file and the
    files beside it: preprocessing.json (no file: resize only) and postprocess.json (used when it
    names no network, or names this one by its digest; else threshold 0.5, with a warning).
    `read_post=False`: the caller brings its own mask step (--threshold, or evaluation's choice),
    so postprocess.json is not read at all.

    In a run folder, config.json is the record train.py keeps and checks; preprocessing.json must
    agree with it (an edited copy is refused, not silently used), and runs written before
    preprocessing.json existed (version 0.2) are read from config.json alone."""
    if model == "pretrained" and not os.path.exists(model):  # a file or folder of that name wins
        model = pretrained_path()
    path = os.path.abspath(model)
    if os.path.isdir(path):
        run = RunFolder(path)
        if not run.has_config():
            hint = (
                f" (it hides the shipped model: rename it, or give {PRETRAINED})"
                if os.path.basename(path) == "pretrained"
                else ""
            )
            raise PredictError(f"{path}: a folder, but not a run folder of train.py (no config.json){hint}")
        if not os.path.exists(run.best_network):
            raise PredictError(f"{run.best_network}: not written yet; the run has not completed an epoch")
        path = run.best_network
    if not os.path.isfile(path):
        raise PredictError(
            f"{path}: no such model file (a run folder holds best.keras and last.keras)"
            if not os.path.exists(path)
            else f"{path}: not a regular file, so not a .keras model"
        )
    folder = os.path.dirname(path)
    preprocessing = read_preprocessing(folder)
    post, source = read_postprocess(folder, path) if read_post else (PostProcessing(), None)
    recorded = any(os.path.exists(os.path.join(folder, name)) for name in (PREPROCESSING, CONFIG))
    return Described(path, preprocessing, post, source, recorded)


def pretrained_path() -> str:
    if not os.path.exists(PRETRAINED):
        raise PredictError(f"{PRETRAINED}: the shipped model is missing from this installation")
    return PRETRAINED


_PREPROCESSING_KEYS = ("clahe", "clahe_clip", "color_constancy", "fit")


def read_preprocessing(folder: str) -> Preprocessing:
    """The preprocessing described in FOLDER/preprocessing.json, checked against a run folder's
    config.json (or, for a run folder of version 0.2, read from it); neither: resize only."""
    found = {}
    for name in (PREPROCESSING, CONFIG):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        data = json_object(path)
        if name == CONFIG:  # config.json holds many other options: take only the preprocessing's
            data = {key: data[key] for key in _PREPROCESSING_KEYS if key in data}
        try:
            found[path] = Preprocessing.from_json(data)
        except (TypeError, ValueError) as err:
            raise PredictError(f"{path}: {err}") from None
    if len(set(found.values())) > 1:
        (first, a), (second, b) = found.items()
        raise PredictError(
            f"{first} ({a}) disagrees with {second} ({b}), the run's record; restore it (train.py writes "
            "it from config.json)"
        )
    return next(iter(found.values()), Preprocessing())


def read_postprocess(folder: str, network_path: str) -> tuple[PostProcessing, str | None]:
    """The mask step in FOLDER/postprocess.json when it belongs to `network_path`, and the file
    it came from; else (threshold 0.5, None), with a warning. A run folder's record is the one
    evaluation keeps (postprocess.read_chosen: it must name its network's digest, and a damaged
    one is ignored, since evaluate.py chooses again); elsewhere a damaged one is an error."""
    path = os.path.join(folder, POSTPROCESS)
    run = RunFolder(folder)
    if run.has_config() and os.path.abspath(network_path) == os.path.abspath(run.best_network):
        chosen = read_chosen(run)
        if chosen is None:
            log.warning(
                "%s: no post-processing chosen for this network; threshold 0.5 (evaluate.py --run %s "
                "chooses one on the validation split)",
                network_path,
                folder,
            )
            return PostProcessing(), None
        return chosen, path
    if not os.path.exists(path):
        return PostProcessing(), None
    data = json_object(path)
    digest = data.get("network_sha256")
    if digest is not None and digest != file_digest(network_path):
        log.warning("%s: chosen for another network than %s; threshold 0.5 used", path, network_path)
        return PostProcessing(), None
    try:
        return PostProcessing.from_json(data, path), path
    except ValueError as err:
        raise PredictError(str(err)) from None


# Beside an export: the images each of its networks trained or selected its model on, so that
# evaluate.py can refuse to score them as a test set (a run folder keeps them in split.json).
TRAINED_ON = "trained_on.json"


def training_records(path: str, digest: str | None = None) -> list[dict] | None:
    """For a network file: one {"name", "rows"} per network it holds (an ensemble: each member)
    with the training and validation images (rows of id and digest) it was made from, from its run
    folder's split.json or from the trained_on.json an export wrote beside it. None when nothing
    records them (a file on its own), or when trained_on.json was written for another file.
    `digest`: the file's SHA-256 when the caller has it already."""
    folder = os.path.dirname(os.path.abspath(path))
    run = RunFolder(folder)
    if run.has_config():
        record = run.read_split_record()
        if not record:
            return None
        rows = [row for name in ("train", "validation") for row in record.get(name, [])]
        return [{"name": run.name, "rows": rows}]
    beside = os.path.join(folder, TRAINED_ON)
    if not os.path.exists(beside):
        return None
    data = json_object(beside)
    if data.get("network_sha256") != (digest or file_digest(path)):
        log.warning("%s: written for another network than %s; its training images are unknown", beside, path)
        return None
    members = data.get("members")
    if not isinstance(members, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("name"), str)
        and isinstance(m.get("rows"), (list, type(None)))
        for m in members
    ):
        raise PredictError(f"{beside}: not a record of training images (members: name, rows)")
    if any(m["rows"] is None for m in members):
        return None  # a member of unknown origin: the whole model's training images are unknown
    return members


def json_object(path: str) -> dict:
    """A JSON file that must hold an object; anything else is a PredictError naming it."""
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise PredictError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise PredictError(f"{path}: not a JSON object")
    return data
