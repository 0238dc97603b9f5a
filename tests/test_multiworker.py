"""Multi-worker training as a user with two machines runs it: two `train.py` processes on
localhost ports, TF_CONFIG set, MultiWorkerMirroredStrategy. Checked: both finish, their weights
are equal, the chief alone writes the run folder, every training example is trained on exactly
once per epoch across the workers, the loss follows a single process with the same global
batch, and a run whose worker is killed resumes from its last completed epoch."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from skinseg.core.run_folder import RunFolder
from skinseg.data_pipeline.split import read_split
from skinseg.data_pipeline.tfdata import load_example
from skinseg.training.distribute import local_cluster
from tests.conftest import ROOT, make_simple

pytestmark = pytest.mark.integration

ARGS = ["--width", "4", "--depth", "2", "--image-size", "32", "--batch-size", "8", "--val-fraction", "0.2"]
# Per-epoch losses of the two workers against one process with the same global batch: the same
# data in the same order and synchronized BatchNorm; measured 0.7 % apart after the first epoch.
LOSS_TOLERANCE = 0.02


def _start_workers(data, out, tmp_path, *extra, env_extra=None, env_of=None):
    """`env_of(index)`: extra environment of one worker (0 is the chief)."""
    processes = []
    for index, tf_config in enumerate(local_cluster(2)):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "TF_CONFIG": tf_config,
            "TMPDIR": str(scratch),
            **(env_extra or {}),
            **(env_of(index) if env_of else {}),
        }
        args = [sys.executable, "train.py", "--strategy", "multiworker", *ARGS, "--out", str(out), *extra]
        if data:
            args += ["--data", data]
        processes.append(
            subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return processes


def _finish(processes):
    outputs = [p.communicate(timeout=600) for p in processes]
    return [(p.returncode, out + err) for p, (out, err) in zip(processes, outputs)]


def _digest(text):
    return re.search(r"weights digest ([0-9a-f]+)", text).group(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_simple(tmp_path_factory.mktemp("mw") / "data", n_train=20, n_test=2)


def test_two_workers_train_once_each_example_and_end_equal(data, tmp_path):
    trace = tmp_path / "trace"
    trace.mkdir()
    out = tmp_path / "run"
    results = _finish(
        _start_workers(data, out, tmp_path, "--epochs", "2", env_extra={"SKINSEG_TRACE_EXAMPLES": str(trace)})
    )
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert _digest(results[0][1]) == _digest(results[1][1])  # the same weights on both workers
    run = RunFolder(out)
    assert [r["epoch"] for r in run.read_history()] == [1, 2]
    assert {"config.json", "split.json", "history.csv", "best.keras", "last.keras", "best.json"} <= set(
        os.listdir(out)
    )
    assert "worker 1" not in open(run.log_path).read()  # the chief alone wrote it
    for index in range(2):  # the other worker's checkpoint folder is gone
        assert os.listdir(tmp_path / f"tmp{index}") == []

    # Each example once per epoch, across the workers: 16 training pairs, global batch 8, 2 steps.
    split = read_split(run.split_path)
    expected = sorted(
        round(float((load_example(p.image, p.mask, 32)[0].astype(np.float32) / 255).sum()), 1)
        for p in split["train"]
    )
    seen: dict[int, list[float]] = {}
    per_worker = []
    for path in sorted(glob.glob(str(trace / "*.txt"))):
        lines = [line.split() for line in open(path)]
        per_worker.append(sum(len(line) - 1 for line in lines))
        for step, *sums in lines:
            seen.setdefault(int(step) // 2, []).extend(round(float(v), 1) for v in sums)
    assert per_worker == [16, 16]  # 4 per step, 2 steps, 2 epochs: half of each global batch
    assert sorted(seen) == [0, 1]
    for epoch, sums in seen.items():
        assert sorted(sums) == pytest.approx(expected, abs=0.2), epoch

    single = tmp_path / "single"
    done = subprocess.run(
        [sys.executable, "train.py", *ARGS, "--epochs", "2", "--data", data, "--out", str(single)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    two = [r["loss"] for r in run.read_history()]
    one = [r["loss"] for r in RunFolder(single).read_history()]
    assert two == pytest.approx(one, rel=LOSS_TOLERANCE)


def test_a_killed_worker_and_a_restart_resume_from_the_last_completed_epoch(data, tmp_path):
    """The worker is killed while it provably is between epochs 1 and 2: it holds at the fault
    point after committing epoch 1 (skinseg.core.faults) and says so; no race with the work."""
    out = tmp_path / "run"
    marker = tmp_path / "worker-after-epoch-1"

    def held(index):
        return (
            {"SKINSEG_FAULT_POINT": "train.epoch_committed:1", "SKINSEG_FAULT_MARKER": str(marker)}
            if index
            else {}
        )

    env = {"SKINSEG_COLLECTIVE_TIMEOUT": "30"}
    processes = _start_workers(data, out, tmp_path, "--epochs", "3", env_extra=env, env_of=held)
    run = RunFolder(out)
    end = time.time() + 300
    while not marker.exists() and processes[1].poll() is None and time.time() < end:
        time.sleep(0.05)
    assert marker.exists(), processes[1].communicate()[1][-2000:]
    processes[1].send_signal(signal.SIGKILL)  # the worker dies before epoch 2
    processes[1].wait()
    chief = processes[0].communicate(timeout=300)  # the chief notices within the collective timeout
    assert processes[0].returncode != 0, chief[1][-2000:]
    completed = run.read_resume_state()["completed_epochs"]
    assert completed in (1, 2)
    results = _finish(_start_workers(None, out, tmp_path, "--resume"))
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert f"resuming {out} after epoch {completed}" in results[0][1]
    assert _digest(results[0][1]) == _digest(results[1][1])
    assert [r["epoch"] for r in run.read_history()] == [1, 2, 3]
