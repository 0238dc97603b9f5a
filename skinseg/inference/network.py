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
from keras import layers

from skinseg.core.errors import DataError, ModelLoadError
from skinseg.data_pipeline.preprocess import Preprocessing
from skinseg.inference.portable import (
    ensemble_members,
    ensemble_network,
    has_colour_constancy,
    inner_network,
    portable_model,
)


def load_segmenter(path: str) -> keras.Model:
    """`keras.models.load_model` in safe mode (a file holding a Lambda layer, i.e. arbitrary
    code, is refused, never run), then `check_segmenter`; errors name the file."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such model file (a run folder holds best.keras and last.keras)")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path}: a folder, not a .keras model file")
    if not os.path.isfile(path):  # a named pipe or a device would block or stream forever
        raise ModelLoadError(f"{path}: not a regular file, so not a .keras model")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a .keras model file (truncated or corrupt?)")
    check_archive(path)
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
    check_weights(model, path)
    return model


# A member of a .keras archive may inflate to this much at most, or to this many times its
# compressed size: weights barely compress (about 1.1x), configurations about 10x, so real
# multi-gigabyte models load, while a small archive that inflates to gigabytes (a zip bomb) is
# refused before a byte of it is inflated.
MEMBER_FLOOR = 64 * 2**20
MEMBER_RATIO = 200


def check_archive(path: str) -> None:
    """The archive's members bounded by their declared sizes (Python's zipfile never inflates a
    member past its declared size, so the declaration is what must be checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelLoadError(f"{path}: not a .keras model file ({err})") from None
    for member in members:
        limit = max(MEMBER_FLOOR, MEMBER_RATIO * member.compress_size)
        if member.file_size > limit:
            raise ModelLoadError(
                f"{path}: its member {member.filename} would inflate from {member.compress_size:,} to "
                f"{member.file_size:,} bytes (over {MEMBER_RATIO}x and {MEMBER_FLOOR // 2**20} MiB): not a "
                "model Keras wrote (a zip bomb?); refused"
            )


def check_weights(model, path: str) -> None:
    """A network whose weights are NaN or infinite writes empty (or full) masks for every image:
    refused, naming how many values are not finite."""
    bad = sum(int(np.size(w) - np.count_nonzero(np.isfinite(w))) for w in model.get_weights())
    if bad:
        raise ModelLoadError(
            f"{path}: {bad:,} of its weights are NaN or infinite (a diverged or damaged model); refused"
        )


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


class _Folded(keras.layers.Layer):
    """Where a folded BatchNormalization was: passes its input on (and accepts the keyword
    arguments the BatchNormalization was called with; never saved)."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """An inference copy of `model` in which every BatchNormalization that directly follows a
    Conv2D (its only consumer) is folded into that convolution: kernel * s and (bias - mean) * s +
    beta, s = gamma / sqrt(var + eps). Same outputs (to float32 rounding), one op less per block
    and a Conv2D+BiasAdd+ReLU that oneDNN runs as one fused kernel. Nested models are copied as
    they are. For inference only: the copy has no BatchNormalization left to train."""

    def inputs_of(layer):
        try:
            found = layer.input
        except (AttributeError, ValueError):  # an InputLayer, or a layer called more than once
            return []
        return found if isinstance(found, (list, tuple)) else [found]

    conv_of_output = {id(c.output): c for c in model.layers if type(c) is layers.Conv2D}
    consumers: dict[int, int] = {}
    for layer in model.layers:
        for tensor in inputs_of(layer):
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    folds = {}  # BatchNormalization name -> the Conv2D it follows
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization) and layer.axis in (-1, 3):
            source = inputs_of(layer)
            if len(source) == 1 and id(source[0]) in conv_of_output and consumers[id(source[0])] == 1:
                folds[layer.name] = conv_of_output[id(source[0])]
    if not folds:
        return model
    folded_convs = {conv.name: name for name, conv in folds.items()}

    def clone(layer):
        if layer.name in folds:
            return _Folded(name=layer.name)
        config = layer.get_config()
        if layer.name in folded_convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        target = copy.get_layer(layer.name)
        if layer.name in folds:
            continue
        if layer.name not in folded_convs:
            target.set_weights(layer.get_weights())
            continue
        bn = model.get_layer(folded_convs[layer.name])
        kernel = np.asarray(layer.kernel, np.float64)
        bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
        mean = np.asarray(bn.moving_mean, np.float64)
        scale = 1.0 / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        if bn.scale:
            scale = scale * np.asarray(bn.gamma, np.float64)
        beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
        target.set_weights(
            [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]
        )
    return copy


def _folded(model: keras.Model) -> keras.Model:
    """fold_batch_norm of the network, inside its portable wrapper when it has one, and of each
    member of an ensemble saved as one model."""
    if has_colour_constancy(model):
        return portable_model(_folded(inner_network(model)), Preprocessing(color_constancy=True))
    members = ensemble_members(model)
    if members:
        return ensemble_network([_folded(member) for member in members], Preprocessing())
    return fold_batch_norm(model)


class Forward:
    """The model's inference pass traced once for any batch size (no retracing per shape).
    `fold`: run a copy with BatchNormalization folded into the convolutions (same outputs to
    2e-5; 1.24x faster at batch 1, 1.02x at batch 8 on the 2-core CPU, bench.peer). XLA is off:
    it was slower there in every configuration."""

    def __init__(self, model: keras.Model, jit_compile: bool = False, fold: bool = True):
        self.model = model
        self._options = (jit_compile, fold)
        self._fn = None  # built on the first call: an ensemble's members are folded inside it only

    def _build(self):
        jit_compile, fold = self._options
        spec = tf.TensorSpec([None, *self.model.input_shape[1:]], tf.float32)
        run = _folded(self.model) if fold else self.model
        return tf.function(lambda x: run(x, training=False), input_signature=[spec], jit_compile=jit_compile)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self._fn is None:
            self._fn = self._build()
        out = self._fn(tf.constant(images, tf.float32)).numpy()[..., 0]
        if not np.isfinite(out).all():  # finite weights can still overflow (e.g. BatchNorm stats)
            raise ModelLoadError(
                f"{self.model.name}: its output holds NaN or infinite values for these images; no "
                "mask can be made from them"
            )
        return out


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
