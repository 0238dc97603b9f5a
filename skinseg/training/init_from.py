"""Fine-tuning: a run that starts from another model's weights (`train.py --init-from SOURCE`).

SOURCE is `pretrained` (the shipped model), a run folder (its best.keras) or a `.keras` file. The
architecture and preprocessing options default to the source's records (a run's config.json; the
shipped model's architecture.json and preprocessing.json; a file's preprocessing.json beside it),
so `--init-from pretrained --data clinic/` needs nothing else; options typed on the command line win,
and a network that then does not fit the weights is refused naming the first layer that differs.
The file used is recorded in config.json (`init_source`: its path and SHA-256)."""

from __future__ import annotations

import json
import os

from skinseg.core.run_folder import PREPROCESSING, RunFolder, file_digest
from skinseg.inference.description import PORTABLE, PredictError, describe, json_object
from skinseg.training.config import ConfigError, RunConfig

ARCHITECTURE_FILE = "architecture.json"  # beside the shipped model: the options that built it
ARCHITECTURE = ("model", "width", "depth", "max_filters", "padding", "backbone", "image_size")
PREPROCESSING_KEYS = ("clahe", "clahe_clip", "color_constancy", "fit")


def source_path(spec: str) -> str:
    """The network file of --init-from (checked to exist and be a regular file)."""
    try:
        return describe(spec, read_post=False).path
    except PredictError as err:
        raise ConfigError(f"--init-from {spec}: {err}") from None


def source_options(spec: str) -> dict:
    """The architecture and preprocessing options the source was built and trained with, as far
    as its records tell (empty when it has none: a bare .keras file)."""
    path = source_path(spec)
    folder = os.path.dirname(path)
    run = RunFolder(folder)
    if run.has_config():
        config = RunConfig.load(run.config_path)
        return {key: getattr(config, key) for key in (*ARCHITECTURE, *PREPROCESSING_KEYS)}
    options = {}
    architecture = os.path.join(folder, ARCHITECTURE_FILE)
    if os.path.exists(architecture):
        data = _object(architecture)
        unknown = sorted(set(data) - set(ARCHITECTURE))
        if unknown:
            raise ConfigError(f"{architecture}: unknown key(s) {', '.join(unknown)}")
        # typed like config.json: RunConfig.from_json refuses wrong types naming the key
        checked = RunConfig.from_json(data, architecture)
        options.update({key: getattr(checked, key) for key in data})
    if not os.path.exists(os.path.join(folder, PREPROCESSING)) and _applies_colour_constancy(path):
        options["color_constancy"] = True  # a portable file on its own says so itself
    if os.path.exists(os.path.join(folder, PREPROCESSING)):
        preprocessing = describe(path, read_post=False).preprocessing
        options.update(
            clahe=preprocessing.clahe,
            clahe_clip=preprocessing.clahe_clip,
            color_constancy=preprocessing.color_constancy,
            fit=preprocessing.fit,
        )
    return options


def _applies_colour_constancy(path: str) -> bool:
    """Whether a .keras archive holds a portable model (inference.portable), read from its
    config.json member without building it."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("config.json")
            if info.file_size > 64 * 2**20:
                return False
            config = json.loads(archive.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False
    return isinstance(config, dict) and str(config.get("config", {}).get("name", "")).startswith(PORTABLE)


def record(spec: str) -> dict:
    """What config.json keeps of the source: what was asked, the file used and its digest."""
    path = source_path(spec)
    return {"source": spec, "path": path, "sha256": file_digest(path)}


def _object(path: str) -> dict:
    try:
        return json_object(path)
    except PredictError as err:
        raise ConfigError(str(err)) from None


def load_initial_weights(network, init_source: dict) -> None:
    """Copy the source's weights into `network`, layer by layer in order; refuse (naming the first
    layer that differs) when the architectures do not match, and when the file changed since the
    run recorded it."""
    path = init_source["path"]
    if not os.path.isfile(path):
        raise ConfigError(f"--init-from: {path} is gone (config.json records it as the starting weights)")
    if file_digest(path) != init_source["sha256"]:
        raise ConfigError(
            f"--init-from: {path} changed since the run recorded it (SHA-256 differs); restore it, or "
            "start a new run"
        )
    from skinseg.core.errors import ModelLoadError
    from skinseg.inference.network import load_segmenter

    try:  # the checks every model gets: a regular file, bounded archive, finite weights, a segmenter
        source = bare_network(load_segmenter(path))
    except ModelLoadError as err:
        raise ConfigError(f"--init-from: {err}") from None
    from skinseg.inference.portable import ensemble_members

    members = ensemble_members(source)
    if members:
        raise ConfigError(
            f"--init-from {path}: an ensemble of {len(members)} networks saved as one model; one network "
            "is fine-tuned at a time: start from one of its members (a run folder or its best.keras)"
        )
    theirs = [layer for layer in source.layers if layer.weights]
    ours = [layer for layer in network.layers if layer.weights]
    for index, (a, b) in enumerate(zip(ours, theirs)):
        shapes_a = [tuple(w.shape) for w in a.weights]
        shapes_b = [tuple(w.shape) for w in b.weights]
        if shapes_a != shapes_b:
            raise ConfigError(
                f"--init-from {path}: its network does not fit the one configured: layer {index} "
                f"({b.name}) has weights {shapes_b}, the configured network's ({a.name}) has {shapes_a}; "
                "give the source's --model/--width/--depth/--max-filters (a run folder's config.json "
                "has them)"
            )
    if len(ours) != len(theirs):
        raise ConfigError(
            f"--init-from {path}: its network has {len(theirs)} layers with weights, the configured one "
            f"{len(ours)} ({source.count_params():,} vs {network.count_params():,} parameters); give the "
            "source's --model/--width/--depth/--max-filters"
        )
    for a, b in zip(ours, theirs):
        a.set_weights(b.get_weights())


def bare_network(model):
    """The segmentation network inside a self-contained model (preprocessing layers in front of
    it: inference.portable), or the model itself."""
    from skinseg.inference.portable import inner_network

    return inner_network(model)
