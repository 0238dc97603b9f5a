"""What a saved network needs, read from the files beside it, without loading it (and without
TensorFlow): the preprocessing its images get and the mask step chosen for it.

A saved model is described the same way wherever it lives: a `.keras` file with
`preprocessing.json` and `postprocess.json` beside it. A run folder is one such place (its
best.keras, the files written by training); so are the shipped model's folder and an export's.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from skinseg.core.atomic import read_json
from skinseg.core.errors import SkinsegError
from skinseg.core.run_folder import BEST, CONFIG, POSTPROCESS, PREPROCESSING, RunFolder, file_digest
from skinseg.data_pipeline.preprocess import Preprocessing
from skinseg.inference.postprocess import PostProcessing

log = logging.getLogger("skinseg")

# The model shipped with the project: `--model pretrained` (see models/pretrained/MODEL_CARD.md).
PRETRAINED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "pretrained", "skinseg-isic.keras"
)


class PredictError(SkinsegError, RuntimeError):
    """A model, its side files, or inputs of a prediction that cannot be used as given."""


@dataclass(frozen=True)
class Described:
    """Where a saved network is and what it needs: its preprocessing and its mask step."""

    path: str
    preprocessing: Preprocessing
    post: PostProcessing
    post_source: str | None  # the postprocess.json used, or None (threshold 0.5)


def describe(model: str) -> Described:
    """Resolve `--model` (pretrained, a run folder, a .keras file) to the network file and the
    files beside it: preprocessing.json (no file: resize only) and postprocess.json (used when it
    names no network, or names this one by its digest; else threshold 0.5, with a warning).

    Run folders written before preprocessing.json existed (version 0.2) carry the same three keys
    in config.json; they are read from there."""
    if model == "pretrained" and not os.path.exists(model):  # a file or folder of that name wins
        if not os.path.exists(PRETRAINED):
            raise PredictError(f"{PRETRAINED}: the shipped model is missing from this installation")
        model = PRETRAINED
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
    folder = os.path.dirname(path)
    preprocessing = read_preprocessing(folder)
    post, source = read_postprocess(folder, path)
    return Described(path, preprocessing, post, source)


def read_preprocessing(folder: str) -> Preprocessing:
    """The preprocessing described in FOLDER/preprocessing.json (or, for a run folder of version
    0.2, in its config.json); none of either: resize only."""
    for name, keys in ((PREPROCESSING, None), (CONFIG, ("clahe", "color_constancy", "fit"))):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        data = _json_object(path)
        if keys:  # config.json holds many other options: take only the preprocessing's
            data = {key: data[key] for key in keys if key in data}
        try:
            return Preprocessing.from_json(data)
        except (TypeError, ValueError) as err:
            raise PredictError(f"{path}: {err}") from None
    return Preprocessing()


def read_postprocess(folder: str, network_path: str) -> tuple[PostProcessing, str | None]:
    """The mask step in FOLDER/postprocess.json when it belongs to `network_path`, and the file
    it came from; else (threshold 0.5, None)."""
    path = os.path.join(folder, POSTPROCESS)
    if not os.path.exists(path):
        return PostProcessing(), None
    in_run = os.path.basename(network_path) == BEST and RunFolder(folder).has_config()
    try:
        data = _json_object(path)
    except PredictError as err:
        if not in_run:
            raise
        # A run's choice is derived data: evaluate.py chooses it again and replaces the file.
        log.warning("%s; ignored, threshold 0.5 (evaluate.py --run %s chooses again)", err, folder)
        return PostProcessing(), None
    digest = data.get("network_sha256")
    if digest is not None and digest != file_digest(network_path):
        if in_run:  # the choice for an earlier best.keras
            return PostProcessing(), None
        log.warning("%s: chosen for another network than %s; threshold 0.5 used", path, network_path)
        return PostProcessing(), None
    try:
        return PostProcessing.from_json(data, path), path
    except ValueError as err:
        if not in_run:
            raise PredictError(str(err)) from None
        log.warning("%s; ignored, threshold 0.5 (evaluate.py --run %s chooses again)", err, folder)
        return PostProcessing(), None


def _json_object(path: str) -> dict:
    try:
        data = read_json(path)
    except (OSError, ValueError) as err:
        raise PredictError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise PredictError(f"{path}: not a JSON object")
    return data
