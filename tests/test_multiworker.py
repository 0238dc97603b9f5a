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


def _validation_loss_of(network_file, pairs, config):
    """The loss and Dice Keras' own evaluate gives in this one process (no strategy) on `pairs`."""
    import keras

    from skinseg.data_pipeline.tfdata import make_dataset
    from skinseg.losses import get_loss
    from skinseg.training.trainer import DiceScore

    network = keras.models.load_model(network_file)
    network.compile(loss=get_loss(config.loss), metrics=[DiceScore()])
    ds = make_dataset(pairs, size=config.image_size, batch_size=config.batch_size, training=False)
    return network.evaluate(ds, verbose=0, return_dict=True)


@pytest.mark.parametrize("layout_validation", [False, True], ids=["carved", "layout"])
def test_two_workers_train_and_validate_on_sizes_that_do_not_divide_the_global_batch(
    layout_validation, tmp_path
):
    """27 training images (30 less 3 carved out) or 21 with a validation folder of 5, global
    batch 8 over 2 workers: each epoch's final 3 (or 5) training images are dropped on both
    workers alike; each worker validates the whole split by itself (no collective), and the
    recorded validation loss is what Keras' evaluate gives in one process for the same weights."""
    from skinseg.training.config import RunConfig
    from tests.conftest import write_pairs

    data = make_simple(tmp_path / "data", n_train=21 if layout_validation else 30, n_test=3)
    if layout_validation:
        ids = [f"ISIC_{i:07d}" for i in range(500, 505)]
        folders = [os.path.join(data, "validation", kind) for kind in ("image", "label")]
        write_pairs(*folders, ids, start=500)
    trace = tmp_path / "trace"
    trace.mkdir()
    out = tmp_path / "run"
    epochs = 1 if layout_validation else 2
    results = _finish(
        _start_workers(
            data,
            out,
            tmp_path,
            "--epochs",
            str(epochs),
            "--val-fraction",
            "0.1",
            env_extra={"SKINSEG_TRACE_EXAMPLES": str(trace)},
        )
    )
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    assert _digest(results[0][1]) == _digest(results[1][1])
    run = RunFolder(out)
    split = read_split(run.split_path)
    n_train, n_val = (21, 5) if layout_validation else (27, 3)
    assert (len(split["train"]), len(split["validation"])) == (n_train, n_val)
    assert f"{n_train // 8} steps per epoch" in results[0][1]
    # Training: per worker 4 images a step, n_train // 8 steps; within an epoch no image twice.
    per_worker = [
        sum(len(line.split()) - 1 for line in open(path)) for path in sorted(glob.glob(str(trace / "*.txt")))
    ]
    assert per_worker == [4 * (n_train // 8) * epochs] * 2
    train_sums = sorted(
        float((load_example(p.image, p.mask, 32)[0].astype(np.float32) / 255).sum()) for p in split["train"]
    )
    for epoch in range(epochs):
        seen = []
        for path in glob.glob(str(trace / "*.txt")):
            for step, *sums in (line.split() for line in open(path)):
                if int(step) // (n_train // 8) == epoch:
                    seen += [float(v) for v in sums]
        assert len(seen) == 8 * (n_train // 8)
        # Every image seen is a distinct training image: the seen pixel sums, in order, each take
        # the next unused training sum within float noise (both lists sorted).
        k = 0
        for value in sorted(seen):
            while k < len(train_sums) and train_sums[k] < value - 0.05:
                k += 1
            assert k < len(train_sums) and abs(train_sums[k] - value) <= 0.05, (value, train_sums)
            k += 1
    # Validation: the whole split, equal to a one-process evaluate of the saved weights.
    history = run.read_history()
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    expected = _validation_loss_of(
        run.file("last.keras"), split["validation"], RunConfig.load(run.config_path)
    )
    assert history[-1]["val_loss"] == pytest.approx(expected["loss"], rel=1e-4, abs=1e-5)
    assert history[-1]["val_dice"] == pytest.approx(expected["dice"], abs=1e-5)


def test_training_images_fewer_than_one_global_batch_are_refused_before_a_folder_is_made(tmp_path):
    data = make_simple(tmp_path / "data", n_train=6, n_test=2)
    out = tmp_path / "run"
    results = _finish(_start_workers(data, out, tmp_path, "--epochs", "1", "--val-fraction", "0.1"))
    for code, text in results:
        assert code == 2, text[-2000:]
        assert "5 training image(s) do not fill one global batch of 8 across 2 replicas" in text
        assert "Traceback" not in text
    assert not out.exists()
