"""SIGKILL a training run during an epoch, and again while a checkpoint is being written; `--resume`
must finish the run with the same epochs and history as an uninterrupted one, and no checkpoint
may ever be half-written."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from skinseg.core.run_folder import RunFolder
from skinseg.training.config import RunConfig
from skinseg.training.run import run_training
from tests.conftest import ROOT, make_simple

pytestmark = pytest.mark.integration  # trains models or starts processes

EPOCHS = 4
ARGS = {
    "model": "baseline",
    "width": 4,
    "depth": 2,
    "image_size": 32,
    "batch_size": 2,
    "epochs": EPOCHS,
    "val_fraction": 0.1,
    "seed": 3,
}


def _cli(data, out):
    args = [sys.executable, os.path.join(ROOT, "train.py"), "--data", data, "--out", out, "--verbose", "0"]
    for key, value in ARGS.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _wait(predicate, timeout=240, what=""):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _completed(run):
    try:
        return json.load(open(os.path.join(run, "resume", "state.json")))["completed_epochs"]
    except (OSError, ValueError):
        return 0


def _assert_no_half_written_files(run):
    for path in glob.glob(os.path.join(run, "*.keras")):
        keras.models.load_model(path)  # raises on a partial archive
    for path in glob.glob(os.path.join(run, "resume", "*.weights.h5")):
        h5py.File(path, "r").close()
    state = os.path.join(run, "resume", "state.json")
    if os.path.exists(state):
        json.load(open(state))


def _resume(run):
    env = {**os.environ, "SKINSEG_CHECKPOINT_DELAY": "0"}
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--out", run, "--resume", "--verbose", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("kill")
    data = make_simple(base / "data", n_train=24, n_test=2)
    reference = run_training(RunConfig(data=data, out=str(base / "reference"), **ARGS), verbose=0)
    return data, base, reference.history


def _columns(rows):
    return np.array([[r["loss"], r["dice"], r["val_loss"], r["val_dice"]] for r in rows])


def test_kill_during_an_epoch_then_resume(setup):
    data, base, reference = setup
    run = str(base / "killed_in_epoch")
    marker = base / "in-epoch-2"
    # The run holds at the start of epoch 2 and says so (skinseg.core.faults): the kill lands
    # there however fast or loaded the machine is.
    env = {**os.environ, "SKINSEG_FAULT_POINT": "train.epoch_begin:2", "SKINSEG_FAULT_MARKER": str(marker)}
    process = subprocess.Popen(_cli(data, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(marker.exists, what="epoch 2")
        assert _completed(run) == 1
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert _completed(run) < EPOCHS
    _assert_no_half_written_files(run)
    _resume(run)
    rows = RunFolder(run).read_history()
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(_columns(rows), _columns(reference), atol=1e-4)
    _assert_no_half_written_files(run)


def test_kill_while_a_checkpoint_is_being_written_then_resume(setup):
    data, base, reference = setup
    run = str(base / "killed_in_checkpoint")
    env = {**os.environ, "SKINSEG_CHECKPOINT_DELAY": "60"}  # pause between writing and renaming
    process = subprocess.Popen(_cli(data, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # config.json is also written through a temporary, briefly: wait for a checkpoint's
        _wait(lambda: glob.glob(os.path.join(run, ".tmp-*.keras")), what="a checkpoint being written")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert glob.glob(os.path.join(run, ".tmp-*"))  # killed mid-write: only the temporary exists
    assert not os.path.exists(os.path.join(run, "best.keras"))
    _assert_no_half_written_files(run)
    _resume(run)
    assert not glob.glob(os.path.join(run, ".tmp-*")) and not glob.glob(os.path.join(run, "resume", ".tmp-*"))
    rows = RunFolder(run).read_history()
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    np.testing.assert_allclose(_columns(rows), _columns(reference), atol=1e-4)
    _assert_no_half_written_files(run)
