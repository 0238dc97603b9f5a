"""Load a saved segmenter and run it: flip test-time augmentation, and a stream that decodes the
next batch of images in threads while the model works on the current one."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf

from skinseg.data_pipeline.errors import DataError


class ModelLoadError(RuntimeError):
    pass


def load_segmenter(path: str) -> keras.Model:
    """`keras.models.load_model` in safe mode (a file holding a Lambda layer, i.e. arbitrary
    code, is refused, never run), then `check_segmenter`; errors name the file."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such model file (a run folder holds best.keras and last.keras)")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path}: a folder, not a .keras model file")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .keras model file (truncated or corrupt?)")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for a bad archive
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise ModelLoadError(
                f"{path}: holds a Lambda layer (arbitrary Python code); refused: models are loaded in "
                "Keras' safe mode and such code is never run"
            ) from None
        raise ModelLoadError(f"{path}: cannot load the model ({type(err).__name__}: {message})") from None
    check_segmenter(model, path)
    return model


def check_segmenter(model, path: str) -> None:
    """A segmenter here takes one RGB image batch (B, H, W, 3) and returns one lesion
    probability map (B, H, W, 1) of the same size; anything else is refused, saying what it is."""
    inputs = model.inputs if isinstance(getattr(model, "inputs", None), list) else []
    outputs = model.outputs if isinstance(getattr(model, "outputs", None), list) else []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{path}: not a segmenter: it has {len(inputs)} input(s) and {len(outputs)} output(s); "
            "expected one image input and one mask output"
        )
    shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
    found = f"input {shape_in}, output {shape_out}"
    if len(shape_in) != 4 or shape_in[-1] != 3 or None in shape_in[1:3]:
        raise ModelLoadError(
            f"{path}: not a segmenter of RGB images: {found}; expected input (None, H, W, 3)"
        )
    if len(shape_out) != 4 or shape_out[-1] != 1:
        hint = (
            " (a 2-channel softmax? save a model whose output is the lesion channel)"
            if len(shape_out) == 4 and shape_out[-1] == 2
            else ""
        )
        raise ModelLoadError(
            f"{path}: not a binary segmenter: {found}; expected output (None, H, W, 1), the lesion "
            f"probability{hint}"
        )
    if shape_out[1:3] != shape_in[1:3]:
        raise ModelLoadError(f"{path}: its mask is not the size of its input: {found}")


def input_size(model: keras.Model) -> tuple[int, int]:
    return int(model.input_shape[1]), int(model.input_shape[2])


class Forward:
    """The model's inference pass traced once for any batch size (no retracing per shape)."""

    def __init__(self, model: keras.Model):
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        self.model = model
        self._fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._fn(tf.constant(images, tf.float32)).numpy()[..., 0]


def predict_probabilities(forward: Forward, images: np.ndarray, tta: bool = False) -> np.ndarray:
    """(B, H, W) lesion probabilities for float images in [0, 1]. TTA averages the identity and
    the horizontal, vertical and double flips, each flipped back."""
    flips = ((), (2,), (1,), (1, 2)) if tta else ((),)
    total = np.zeros(images.shape[:3], np.float32)
    for axes in flips:
        flipped = np.ascontiguousarray(np.flip(images, axes)) if axes else images
        pred = forward(flipped)
        total += np.flip(pred, axes) if axes else pred
    return total / len(flips)


def stream_predictions(
    forward: Forward,
    items: Iterable,
    load: Callable,
    *,
    batch_size: int = 8,
    tta: bool = False,
    workers: int | None = None,
) -> Iterator[tuple[object, np.ndarray | None, object]]:
    """Yields (item, probabilities at the model's input size, extra) for each item, in order.

    `load(item)` returns (uint8 model input (H, W, 3), extra); it runs in a thread pool one batch
    ahead of the model (decoding, resizing and the model's work overlap: Pillow, OpenCV and
    TensorFlow all release the GIL). When `load` raises a `DataError` (an unreadable file), the
    item is yielded as (item, None, the error) and the stream goes on. Memory holds two batches."""
    items = list(items)
    batches = [items[k : k + batch_size] for k in range(0, len(items), batch_size)]

    def safe_load(item):
        try:
            return load(item)
        except DataError as err:
            return err

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        pending = [pool.submit(safe_load, item) for item in batches[0]] if batches else []
        for k, batch in enumerate(batches):
            results = [future.result() for future in pending]
            pending = (
                [pool.submit(safe_load, item) for item in batches[k + 1]] if k + 1 < len(batches) else []
            )
            ready = [r for r in results if not isinstance(r, DataError)]
            probs = iter(
                predict_probabilities(
                    forward, np.stack([r[0] for r in ready]).astype(np.float32) / 255.0, tta
                )
                if ready
                else ()
            )
            for item, result in zip(batch, results):
                if isinstance(result, DataError):
                    yield item, None, result
                else:
                    yield item, next(probs), result[1]
