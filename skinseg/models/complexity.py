"""Parameter and FLOP counts. FLOPs come from TensorFlow's own graph profiler (a multiply-add
counts 2), run on the traced forward pass at batch 1."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def count_params(model: keras.Model) -> dict[str, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"params": int(model.count_params()), "trainable_params": trainable}


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one forward pass of one image."""
    profiler = tf.compat.v1.profiler
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the v1 profiler warns about its own v1 internals
    try:
        return int(profiler.profile(graph, options=options).total_float_ops)
    finally:
        logger.setLevel(level)
