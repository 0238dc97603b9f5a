"""Self-contained models: the per-image preprocessing inside the `.keras` file, in Keras ops.

What a run saves (best.keras, last.keras) and the shipped model, loaded by the plain call
`keras.models.load_model(path)` in a process that imports only Keras (safe mode: no custom class,
no Lambda), give the probabilities `predict.py` gives without TTA, for an image resized (or padded,
`fit: pad`) to the input size outside the file, as float32 RGB in [0, 1]. Colour constancy is built
from `keras.ops` calls that Keras serialises by name; CLAHE (OpenCV's tiled histogram equalisation)
has no portable form: a CLAHE run's file holds colour constancy when it has it, and the caller
applies skinseg.data_pipeline.preprocess.clahe(image, clip) first (README, "A saved model").
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from skinseg.data_pipeline.preprocess import SHADES_OF_GRAY_POWER, Preprocessing
from skinseg.inference.description import PORTABLE


def shades_of_gray_ops(images, power: float = SHADES_OF_GRAY_POWER):
    """Shades-of-Gray colour constancy on a float batch (B, H, W, 3) in [0, 1] in keras.ops: the
    uint8 path's arithmetic (preprocess.shades_of_gray), rounded to 1/255 steps as it is."""
    x = ops.maximum(images, 0.0)
    x = ops.round(x * 255.0) / 255.0
    illuminant = ops.power(ops.mean(ops.power(x, power), axis=(1, 2), keepdims=True), 1.0 / power)
    unit = illuminant / (ops.sqrt(ops.sum(illuminant * illuminant, axis=-1, keepdims=True)) + 1e-6)
    corrected = ops.clip(x / (unit * np.float32(np.sqrt(3.0)) + 1e-6), 0.0, 1.0)
    return ops.round(corrected * 255.0) / 255.0


def portable_model(network: keras.Model, preprocessing: Preprocessing) -> keras.Model:
    """`network` with the per-image preprocessing it was trained with in front of it, sharing its
    weights (saving it saves the network's current weights). Without colour constancy there is
    nothing per-image to add: the network itself is returned."""
    if not preprocessing.color_constancy:
        return network
    image = keras.Input(network.input_shape[1:], name="image")
    return keras.Model(image, network(shades_of_gray_ops(image)), name=f"{PORTABLE}_{network.name}")


# Name prefix of an ensemble saved as one model (ensemble_network).
ENSEMBLE = "skinseg_ensemble"
MEAN = "mean_probability"


def ensemble_network(networks: list[keras.Model], preprocessing: Preprocessing) -> keras.Model:
    """Several networks of one input size as one functional model whose output is the mean of
    their lesion probabilities (what Segmenter.ensemble computes), with colour constancy once in
    front when they were trained with it. Built-in layers only, so the saved file loads with a
    plain `keras.models.load_model`, exports, and is read by `--model` like any other model.
    The members keep their weights (shared, not copied); each is re-wrapped under the name
    member_K because two files' networks carry the same layer and model names."""
    inner, seen = [], set()
    for network in networks:
        network = inner_network(network)
        if seen & {id(weight) for weight in network.weights}:
            # One network twice (or inside another member): Keras saves shared weights once and
            # then cannot load the file, so this member gets its own copy.
            copy = keras.models.clone_model(network)
            copy.set_weights(network.get_weights())
            network = copy
        seen.update(id(weight) for weight in network.weights)
        inner.append(network)
    image = keras.Input(inner[0].input_shape[1:], name="image")
    members = [
        keras.Model(network.inputs[0], network.outputs[0], name=f"member_{k}")
        for k, network in enumerate(inner)
    ]
    mean = keras.layers.Average(name=MEAN)([member(image) for member in members])
    return portable_model(keras.Model(image, mean, name=f"{ENSEMBLE}{len(members)}"), preprocessing)


def ensemble_members(model) -> list[keras.Model] | None:
    """The member networks of an ensemble_network (inside its colour-constancy wrapper or not);
    None for any other model."""
    # By structure, not by name: inside another ensemble a member is renamed member_K.
    layers = getattr(inner_network(model), "layers", [])
    if not any(isinstance(layer, keras.layers.Average) and layer.name == MEAN for layer in layers):
        return None
    found = [layer for layer in layers if isinstance(layer, keras.Model)]
    return found or None


def has_colour_constancy(model) -> bool:
    """Whether the model applies colour constancy itself (a portable_model)."""
    return str(getattr(model, "name", "")).startswith(PORTABLE) and _nested(model) is not None


def inner_network(model):
    """The segmentation network of a portable model, or the model itself."""
    return _nested(model) if has_colour_constancy(model) else model


def _nested(model):
    found = [layer for layer in getattr(model, "layers", []) if isinstance(layer, keras.Model)]
    return found[0] if len(found) == 1 else None
