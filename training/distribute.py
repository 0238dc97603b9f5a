"""Distribution strategies. Training always runs inside one strategy's scope; `--batch-size` is
the global batch, split across replicas."""

from __future__ import annotations

import json
import os

import tensorflow as tf


class StrategyError(RuntimeError):
    pass


def split_cpu(n: int) -> None:
    """Expose the CPU as `n` logical devices (to run MirroredStrategy without GPUs). Must run
    before TensorFlow initialises its devices."""
    if n <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # devices already initialised: fine if they are already split so
        if len(tf.config.list_logical_devices("CPU")) != n:
            raise StrategyError(
                f"--logical-cpus {n}: TensorFlow's devices were initialised before they could be split; "
                "run the command in a fresh process"
            ) from None


def make_strategy(name: str) -> tf.distribute.Strategy:
    """`auto`: MirroredStrategy over all GPUs when more than one is visible, else the default
    strategy. `mirrored`: all GPUs, or all logical CPUs when there is no GPU. `multiworker`:
    MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable."""
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "default" or (name == "auto" and len(gpus) <= 1):
        return tf.distribute.get_strategy()
    if name in ("auto", "mirrored"):
        devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise StrategyError(
                "--strategy multiworker needs the TF_CONFIG environment variable "
                "(cluster and task of this worker); see the TensorFlow distribution guide"
            )
        try:
            json.loads(raw)
        except ValueError as err:
            raise StrategyError(f"TF_CONFIG is not valid JSON ({err})") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise StrategyError(f"unknown strategy {name!r}; valid: auto, default, mirrored, multiworker")
