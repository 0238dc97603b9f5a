"""Export a Segmenter for serving: a TensorFlow SavedModel and a float32 TFLite file.

Both take float32 RGB images in [0, 1] at the network's input size, (B, H, W, 3), and return
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

from skinseg.core.atomic import atomic_path, write_json
from skinseg.data_pipeline.preprocess import shades_of_gray_tf
from skinseg.inference.portable import has_colour_constancy
from skinseg.inference.segmenter import PredictError, Segmenter


def export(segmenter: Segmenter, out: str, overwrite: bool = False) -> dict:
    """Writes OUT/saved_model, OUT/model.tflite, OUT/preprocessing.json, OUT/postprocess.json."""
    preprocessing, model = segmenter.preprocessing, segmenter.network
    if os.path.exists(os.path.join(out, "saved_model")) and not overwrite:
        raise PredictError(f"{out}: holds an export already; pass --overwrite to replace it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise PredictError(f"{out}: --export is a file; it must be a folder")
    h, w = segmenter.input_size
    os.makedirs(out, exist_ok=True)

    @tf.function(input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32, name="image")])
    def serve(images):
        if preprocessing.color_constancy and not has_colour_constancy(model):  # else the file does it
            images = shades_of_gray_tf(images)
        return model(images, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    saved_model = os.path.join(out, "saved_model")
    staging = tempfile.mkdtemp(prefix=".saved_model-", dir=out)
    try:
        archive.write_out(staging, verbose=False)
        if os.path.exists(saved_model):
            shutil.rmtree(saved_model)
        os.rename(staging, saved_model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tflite = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    tflite_path = os.path.join(out, "model.tflite")
    with atomic_path(tflite_path) as tmp, open(tmp, "wb") as handle:
        handle.write(tflite)
    notes = [
        "colour constancy: inside both graphs" if preprocessing.color_constancy else "no colour constancy"
    ]
    if preprocessing.clahe:
        notes.append(
            f"CLAHE: apply it before calling, clip limit {preprocessing.clahe_clip:g} "
            "(skinseg.data_pipeline.preprocess.clahe)"
        )
    write_json(
        os.path.join(out, "preprocessing.json"),
        {
            **preprocessing.to_json(),
            "input": f"float32 RGB in [0, 1], shape (batch, {h}, {w}, 3): the image resized to {h}x{w}"
            + (
                " keeping its aspect ratio, centred, padded with black (fit: pad)"
                if preprocessing.fit == "pad"
                else ""
            ),
            "output": f"lesion probability, float32, shape (batch, {h}, {w}, 1)",
            "notes": notes,
        },
    )
    write_json(os.path.join(out, "postprocess.json"), segmenter.post.to_json())
    return {"saved_model": saved_model, "tflite": tflite_path}
