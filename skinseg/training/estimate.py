"""A warning before a long CPU run: the epoch time a model will take here, estimated from its
FLOPs and this machine's measured matrix-multiply speed."""

from __future__ import annotations

import logging
import os
import subprocess
import time

import tensorflow as tf

from skinseg.data_pipeline.tfdata import available_memory
from skinseg.models.complexity import forward_flops
from skinseg.models.unet import level_filters
from skinseg.training.config import ConfigError

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


# --- memory: do the reference's widths fit? ------------------------------------------------------

BYTES = 4  # float32: the reference trained in fp32, and so does a --recipe reference run
# Adam keeps two slots per weight; the gradients one more copy; EMA one more; writing a checkpoint
# one more (the serialised weights).
_COPIES = {"adam": 5, "adamw": 5, "sgd": 4}
# Per sample and level, the float32 tensors a double conv keeps for its backward pass: (padded
# input, convolution, BatchNorm, ReLU) twice; a decoder level also its upsampled half and the
# concatenation. Calibrated on one measurement (BENCHMARKS.md: the bigger UNet, uncapped, peak RSS
# 5.90 / 7.52 GiB at batch 8 / 16 against 5.55 / 7.79 estimated): x1.0, plus the runtime's own 1 GiB.
_KEPT_PER_ENCODER_LEVEL, _KEPT_PER_DECODER_LEVEL, _BACKWARD = 8, 11, 1.0
_RUNTIME_BYTES = 2**30
HEADROOM = 0.8  # of the device's memory: the framework, the data pipeline and fragmentation


def unet_parameters(filters: list[int]) -> int:
    """The UNet's parameter count from its level filters (conv 3x3 with bias + BatchNorm's four
    per channel; 2x2 transposed convolutions with bias; the 1x1 head), without building it."""

    def double(cin, cout):
        return 9 * cin * cout + cout + 4 * cout + 9 * cout * cout + cout + 4 * cout

    total, cin = 0, 3
    for f in filters:
        total += double(cin, f)
        cin = f
    for f in reversed(filters[:-1]):
        total += 4 * cin * f + f + double(2 * f, f)
        cin = f
    return total + cin + 1


def unet_training_bytes(
    filters: list[int], image_size: int, batch_size: int, optimizer: str = "adam", ema: bool = False
) -> int:
    """Estimated memory of training a UNet: weights, gradients and optimizer state, plus the
    activations of one batch kept for the backward pass."""
    weights = unet_parameters(filters) * BYTES * (_COPIES.get(optimizer, 5) + int(ema)) + _RUNTIME_BYTES
    per_sample = 0
    for level, f in enumerate(filters):
        pixels = (image_size // 2**level) ** 2
        kept = (
            _KEPT_PER_ENCODER_LEVEL
            if level == len(filters) - 1
            else _KEPT_PER_ENCODER_LEVEL + _KEPT_PER_DECODER_LEVEL
        )
        per_sample += kept * f * pixels
    return int(weights + _BACKWARD * per_sample * batch_size * BYTES)


def device_memory() -> tuple[int, str]:
    """(bytes, what): the free memory of the first GPU this process sees (nvidia-smi, honouring
    CUDA_VISIBLE_DEVICES), or the host's available memory. A MIG slice reports its parent's
    memory to nvidia-smi: SKINSEG_DEVICE_MEMORY_GB says how much there is."""
    given = os.environ.get("SKINSEG_DEVICE_MEMORY_GB")
    if given:
        try:
            value = float(given)
            if not 0 < value < float("inf"):
                raise ValueError
        except ValueError:
            raise ConfigError(f"SKINSEG_DEVICE_MEMORY_GB={given!r}: not a positive number of GB") from None
        return int(value * 2**30), "memory given by SKINSEG_DEVICE_MEMORY_GB"
    if tf.config.list_physical_devices("GPU"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        try:
            out = subprocess.run(
                ["nvidia-smi", "-i", visible, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            return int(out[0]) * 2**20, f"free memory of GPU {visible} (nvidia-smi)"
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return 16 * 2**30, "GPU memory (assumed 16 GiB: nvidia-smi did not answer)"
    return available_memory(), "available host memory"


def fit_capacity(
    width: int,
    depth: int,
    max_filters: int | None,
    image_size: int,
    batch_size: int,
    optimizer: str,
    ema: bool,
    memory: tuple[int, str] | None = None,
) -> dict:
    """Settle a UNet's channel cap against the memory there is. `max_filters` 0: the reference's
    widths if they fit, else the widest power-of-two cap that does; None: the reference's widths
    or nothing (an error); N: N. Returns the record config.json keeps."""
    available, what = memory or device_memory()
    budget = int(available * HEADROOM)

    def estimate(cap):
        filters = level_filters(width, depth, cap)
        return unet_parameters(filters), unet_training_bytes(filters, image_size, batch_size, optimizer, ema)

    reference_params, needed = estimate(None)
    record = {
        "reference_parameters": reference_params,
        "reference_gib": round(needed / 2**30, 2),
        "budget_gib": round(budget / 2**30, 2),
        "memory": what,
    }
    if max_filters == 0:
        cap = None
        if needed > budget:
            cap = width * 2**depth
            while cap > width and estimate(cap)[1] > budget:
                cap //= 2
            if estimate(cap)[1] > budget:
                raise ConfigError(
                    f"even at its first level's width ({width} filters) this UNet needs an estimated "
                    f"{estimate(cap)[1] / 2**30:.1f} GiB of {what}'s {budget / 2**30:.1f} GiB budget at batch "
                    f"{batch_size}; lower --batch-size or --image-size"
                )
    else:
        cap = max_filters
        if cap is None and needed > budget:
            raise ConfigError(
                f"--max-filters none: the reference's widths ({reference_params:,} parameters) need an "
                f"estimated {needed / 2**30:.1f} GiB at batch {batch_size}, more than the "
                f"{budget / 2**30:.1f} GiB budget ({HEADROOM:.0%} of the {what}); give --max-filters N, a "
                "smaller --batch-size, or a machine with more memory"
            )
    params, used = estimate(cap)
    return {
        **record,
        "max_filters": cap,
        "parameters": params,
        "estimated_gib": round(used / 2**30, 2),
        "capped": params < reference_params,
    }
