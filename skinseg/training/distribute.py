"""Distribution strategies. Training always runs inside one strategy's scope; `--batch-size` is
the global batch, split across replicas."""

from __future__ import annotations

import json
import os
import socket

import tensorflow as tf

from skinseg.core.errors import SkinsegError


class StrategyError(SkinsegError, RuntimeError):
    """A distribution strategy that cannot run here (devices, TF_CONFIG)."""


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
    MultiWorkerMirroredStrategy configured by the TF_CONFIG environment variable; it must be the
    first TensorFlow work of the process (collective ops are configured at start-up), so nothing
    here touches the devices before it."""
    if name == "multiworker":
        return _multi_worker()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "default" or (name == "auto" and len(gpus) <= 1):
        return tf.distribute.get_strategy()
    if name in ("auto", "mirrored"):
        devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    raise StrategyError(f"unknown strategy {name!r}; valid: auto, default, mirrored, multiworker")


def collective_timeout() -> float:
    """SKINSEG_COLLECTIVE_TIMEOUT (seconds, default 600): a worker that never comes back must not
    hang the others forever."""
    raw = os.environ.get("SKINSEG_COLLECTIVE_TIMEOUT", "600")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):
        raise StrategyError(f"SKINSEG_COLLECTIVE_TIMEOUT={raw!r}: not a positive number of seconds")
    return value


def _multi_worker() -> tf.distribute.Strategy:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise StrategyError(
            "--strategy multiworker needs the TF_CONFIG environment variable "
            "(cluster and task of this worker); see the README, 'More than one machine'"
        )
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        task = spec["task"]
        task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise StrategyError(
            f"TF_CONFIG is not a cluster description ({type(err).__name__}: {err}); expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}'
        ) from None
    if not isinstance(workers, list) or not workers:
        raise StrategyError("TF_CONFIG names no worker (cluster.worker must be a list of host:port)")
    index = int(task["index"])
    if task["type"] not in ("worker", "chief") or not 0 <= index < len(workers):
        raise StrategyError(
            f"TF_CONFIG: task {task['type']} {index} is not one of the cluster's {len(workers)} worker(s) "
            f"(index 0 ... {len(workers) - 1})"
        )
    timeout = collective_timeout()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as err:
        raise StrategyError(
            f"the multi-worker strategy could not start ({err}); it must be created before any "
            "other TensorFlow work in the process"
        ) from None


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The worker that writes the run folder: the `chief` task, or worker 0 when there is none
    (TensorFlow's convention). Any single-process strategy is its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_name(strategy: tf.distribute.Strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return ""
    return f"{resolver.task_type} {resolver.task_id}"


def local_cluster(workers: int) -> list[str]:
    """TF_CONFIG values for `workers` workers on this machine's free ports, one per worker (to
    try multi-worker training on one host)."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("localhost", 0))
    hosts = [f"localhost:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [
        json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
        for index in range(workers)
    ]
