"""Export a Segmenter for serving: a TensorFlow SavedModel, a float32 TFLite file, and the Keras
file they were made from (`model.keras`; `model.needs-clahe.keras` when the caller must apply
CLAHE), which `--model` and a plain `keras.models.load_model` read. An ensemble exports as one
model: its members' probabilities averaged inside the graph (inference.portable.ensemble_network).

The graphs take float32 RGB images in [0, 1] at the network's input size, (B, H, W, 3), and return
lesion probabilities (B, H, W, 1). Colour constancy, when the network was trained with it, is part
of both graphs; CLAHE is not (OpenCV), and `preprocessing.json` beside them says whether the
caller must apply it. `postprocess.json` beside them is the mask step (predict.py reads both).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from skinseg.core.atomic import write_json
from skinseg.core.faults import fault_point
from skinseg.core.locking import FolderLock
from skinseg.core.run_folder import file_digest
from skinseg.data_pipeline.preprocess import shades_of_gray_tf
from skinseg.inference.description import TRAINED_ON, training_records
from skinseg.inference.portable import has_colour_constancy, inner_network, portable_model
from skinseg.inference.segmenter import PredictError, Segmenter


def export(segmenter: Segmenter, out: str, overwrite: bool = False, *, locked: bool = False) -> dict:
    """Writes OUT/saved_model, OUT/model.tflite, OUT/model.keras (model.needs-clahe.keras),
    OUT/preprocessing.json, OUT/postprocess.json and, when every network records what it trained
    on, OUT/trained_on.json;
    one writer at a time (the folder is locked; `locked`: the caller holds OUT's lock already)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise PredictError(f"{out}: --export is a file; it must be a folder")
    if locked:
        os.makedirs(out, exist_ok=True)
        return _export(segmenter, out, overwrite)
    with FolderLock(out, "an export", PredictError):
        return _export(segmenter, out, overwrite)


EXPORT_FILES = ("saved_model", "model.tflite", "preprocessing.json", "postprocess.json")
# One of these, by whether the caller must apply CLAHE (a run folder names its files the same way).
KERAS_FILES = ("model.keras", "model.needs-clahe.keras")
# Written when every network in the export records its training images (inference.description).
OPTIONAL_FILES = (*KERAS_FILES, TRAINED_ON)
STAGING_PREFIX = ".export-"


def _export(segmenter: Segmenter, out: str, overwrite: bool) -> dict:
    """All parts built in a staging folder inside OUT, then moved in together: a kill while
    building (TFLite conversion takes the longest) leaves the previous export whole, and the
    staging folder of a killed export is removed by the next one (the lock says none is running)."""
    preprocessing, model = segmenter.preprocessing, segmenter.network
    for name in os.listdir(out):
        if name.startswith(STAGING_PREFIX):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    present = [name for name in EXPORT_FILES + OPTIONAL_FILES if os.path.exists(os.path.join(out, name))]
    if present and not overwrite:
        raise PredictError(
            f"{out}: holds an export already; pass --overwrite to replace it ({', '.join(present)})"
        )
    h, w = segmenter.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="image")])
    def serve(images):
        if preprocessing.color_constancy and not has_colour_constancy(model):  # else the file does it
            images = shades_of_gray_tf(images)
        return model(images, training=False)

    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)
    try:
        try:
            _build(staging, model, serve, segmenter, h, w)
        except (OSError, tf.errors.OpError) as err:
            # A full disk or a file-size limit: TensorFlow's writers say so as an OpError naming
            # the file (other OpErrors, a graph that does not trace, are not about writing: raised
            # as they are), ours as an OSError; either way nothing under OUT's final names has
            # been touched yet.
            if isinstance(err, tf.errors.OpError):
                if staging not in (err.message or ""):
                    raise
                what = err.message.strip().splitlines()[0]
            else:
                what = ": ".join(str(part) for part in (err.filename, err.strerror or err) if part)
            raise PredictError(
                f"{out}: the export could not be written ({what}); the previous export, if any, is unchanged"
            ) from None
        # the swap: a few renames (the old parts out of the way first, then the new ones in)
        for name in EXPORT_FILES + OPTIONAL_FILES:
            target = os.path.join(out, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.remove(target)
            if name in EXPORT_FILES or os.path.exists(os.path.join(staging, name)):
                os.rename(os.path.join(staging, name), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "saved_model": os.path.join(out, "saved_model"),
        "tflite": os.path.join(out, "model.tflite"),
        "keras": os.path.join(out, _keras_name(segmenter.preprocessing)),
    }


def _keras_name(preprocessing) -> str:
    return KERAS_FILES[1] if preprocessing.clahe else KERAS_FILES[0]


def _build(staging: str, model, serve, segmenter: Segmenter, h: int, w: int) -> None:
    """The parts of an export, in the staging folder."""
    # The Keras file holds colour constancy itself when the network was trained with it (a file
    # saved before that existed gets it here), so it needs nothing but the resize (and CLAHE).
    network = inner_network(model)
    keras_path = os.path.join(staging, _keras_name(segmenter.preprocessing))
    portable_model(network, segmenter.preprocessing).save(keras_path)
    members = [training_records(m.source) if m.source else None for m in segmenter.members]
    if all(record is not None for record in members):
        write_json(
            os.path.join(staging, TRAINED_ON),
            {
                "network_sha256": file_digest(keras_path),
                "members": [member for record in members for member in record],
            },
        )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    archive.write_out(os.path.join(staging, "saved_model"), verbose=False)
    tflite = tf.lite.TFLiteConverter.from_saved_model(os.path.join(staging, "saved_model")).convert()
    with open(os.path.join(staging, "model.tflite"), "wb") as handle:
        handle.write(tflite)
    write_json(os.path.join(staging, "preprocessing.json"), _described(segmenter.preprocessing, h, w))
    write_json(os.path.join(staging, "postprocess.json"), segmenter.post.to_json())
    fault_point("export.staged")


def _described(preprocessing, h: int, w: int) -> dict:
    """preprocessing.json of an export: the options, and what the caller must do."""
    notes = [
        "colour constancy: inside both graphs" if preprocessing.color_constancy else "no colour constancy"
    ]
    if preprocessing.clahe:
        notes.append(
            f"CLAHE: apply it before calling, clip limit {preprocessing.clahe_clip:g} "
            "(skinseg.data_pipeline.preprocess.clahe)"
        )
    return {
        **preprocessing.to_json(),
        "input": f"float32 RGB in [0, 1], shape (batch, {h}, {w}, 3): the image resized to {h}x{w}"
        + (
            " keeping its aspect ratio, centred, padded with black (fit: pad)"
            if preprocessing.fit == "pad"
            else ""
        ),
        "output": f"lesion probability, float32, shape (batch, {h}, {w}, 1)",
        "notes": notes,
    }
