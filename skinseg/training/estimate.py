"""A warning before a long CPU run: the epoch time a model will take here, estimated from its
FLOPs and this machine's measured matrix-multiply speed."""

from __future__ import annotations

import logging
import time

import tensorflow as tf

from skinseg.models.complexity import forward_flops

log = logging.getLogger("skinseg")

# A training step is about 3 forward passes; convolutions reach roughly half the matmul peak on
# a CPU (bench.train measures 32-78 % across the presets).
_STEP_FORWARDS = 3.0
_EFFICIENCY = 0.5
WARN_MINUTES_PER_EPOCH = 10.0


def matmul_flops_per_second(n: int = 1024, repeat: int = 3) -> float:
    a = tf.random.normal((n, n))
    tf.linalg.matmul(a, a)  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        result = tf.linalg.matmul(a, a)
    result.numpy()
    return repeat * 2 * n**3 / (time.perf_counter() - start)


def minutes_per_epoch(network, images: int) -> float:
    return _STEP_FORWARDS * forward_flops(network) * images / (_EFFICIENCY * matmul_flops_per_second()) / 60


def warn_if_slow(network, images_per_epoch: int, epochs: int) -> None:
    """On a machine without a GPU, say so when an epoch will take more than 10 minutes."""
    if tf.config.list_logical_devices("GPU") or images_per_epoch == 0:
        return
    h, w = network.input_shape[1:3]
    if network.count_params() < 1_000_000 and h * w < 512 * 512:
        return  # far below ten minutes an epoch; not worth tracing the model to count its FLOPs
    minutes = minutes_per_epoch(network, images_per_epoch)
    if minutes >= WARN_MINUTES_PER_EPOCH:
        log.warning(
            "warning: %s on this CPU will take about %.0f min per epoch (%.1f h for %d epochs; an "
            "estimate from its FLOPs). A GPU (pip install tensorflow[and-cuda]) or a CPU-sized "
            "--width makes it practical",
            network.name,
            minutes,
            minutes * epochs / 60,
            epochs,
        )
