"""Faults, round three (docs/FAULTS.md): models that cannot be right, one writer per output,
results up to date by content, spacing that must be whole, and the environment checked."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import keras
import numpy as np
import pytest

from skinseg.cli import predict
from skinseg.core.errors import DataError, ModelLoadError
from skinseg.core.locking import FolderLock
from skinseg.core.run_folder import RunFolder
from skinseg.evaluation.spacing import parse_spacing
from skinseg.inference.network import check_archive, load_segmenter
from skinseg.models.registry import build_model
from tests.conftest import EXPORTED


def _tiny(path: str) -> str:
    build_model("baseline", 32, width=2, depth=1).save(path)
    return path


def test_a_model_with_non_finite_weights_is_refused(tmp_path):
    network = build_model("baseline", 32, width=2, depth=1)
    weights = network.get_weights()
    weights[0][0, 0, 0, 0] = np.nan
    network.set_weights(weights)
    path = str(tmp_path / "nan.keras")
    network.save(path)
    with pytest.raises(ModelLoadError, match=r"1 of its weights are NaN or infinite") as err:
        load_segmenter(path)
    assert path in str(err.value)


def test_a_named_pipe_as_the_model_is_refused_at_once(tmp_path, capsys):
    pipe = str(tmp_path / "model.keras")
    os.mkfifo(pipe)
    images = tmp_path / "in"
    images.mkdir()
    keras.utils.save_img(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert predict.main(["--model", pipe, str(images), "--out", str(tmp_path / "out")]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_an_archive_member_that_would_inflate_to_gigabytes_is_refused_before_inflating(tmp_path):
    path = str(tmp_path / "bomb.keras")
    real = _tiny(str(tmp_path / "real.keras"))
    with zipfile.ZipFile(real) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in source.infolist():
            if info.filename != "config.json":
                bomb.writestr(info, source.read(info))
        bomb.writestr("config.json", b" " * (80 * 2**20))  # 80 MiB of blanks: a few kB compressed
    assert os.path.getsize(path) < 2 * os.path.getsize(real)
    with pytest.raises(ModelLoadError, match=r"member config.json would inflate .* \(a zip bomb\?\)"):
        check_archive(path)
    check_archive(real)  # a model Keras wrote passes


def test_spacing_must_be_whole_finite_and_positive(tmp_path):
    for bad in ("nan", "0", "-1", "inf", "1,nan"):
        with pytest.raises(DataError, match="positive, finite"):
            parse_spacing(bad)
    table = tmp_path / "spacing.csv"
    table.write_text("id,spacing\na,0.5\nb,0.25\n")
    spacing_of = parse_spacing(str(table))
    assert spacing_of("a") == (0.5, 0.5)
    with pytest.raises(DataError, match=r"no spacing for c \(and no default row with id \*\)"):
        spacing_of("c")
    table.write_text("id,spacing\na,0.5\n*,0.1\n")
    assert parse_spacing(str(table))("c") == (0.1, 0.1)
    table.write_text("id,spacing\na,nan\n")
    with pytest.raises(DataError, match="line 2: spacing of a must be positive and finite"):
        parse_spacing(str(table))
    table.write_text("id,spacing\na,1\na,2\n")
    with pytest.raises(DataError, match="a is listed twice"):
        parse_spacing(str(table))


def test_a_second_writer_of_an_output_folder_is_refused(tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    keras.utils.save_img(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    model = _tiny(str(tmp_path / "m.keras"))
    out = str(tmp_path / "out")
    with FolderLock(out, "masks", RuntimeError):  # another predict.py writing there
        assert predict.main(["--model", model, str(images), "--out", out]) == 2
        assert "in use by another process writing masks (predict.py)" in capsys.readouterr().err
        with pytest.raises(RuntimeError, match="one writer at a time"):
            FolderLock(out, "masks", RuntimeError).__enter__()
    assert predict.main(["--model", model, str(images), "--out", out]) == 0  # released


@pytest.mark.parametrize(
    ("tf_config", "timeout", "message"),
    [
        (
            {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}},
            None,
            "index 0 ... 0",
        ),
        ({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}, None, "names no worker"),
        (
            {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}},
            "abc",
            "not a positive",
        ),
        (
            {"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}},
            "-5",
            "not a positive",
        ),
    ],
)
def test_the_multi_worker_environment_is_checked_before_training(monkeypatch, tf_config, timeout, message):
    from skinseg.training.distribute import StrategyError, _multi_worker

    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    if timeout is not None:
        monkeypatch.setenv("SKINSEG_COLLECTIVE_TIMEOUT", timeout)
    with pytest.raises(StrategyError, match=message):
        _multi_worker()


@pytest.mark.integration
def test_results_are_up_to_date_by_content_and_a_training_run_is_not_scored(tmp_path):
    from skinseg.evaluation.score_run import EvaluationError, evaluate_run, evaluation_is_current
    from skinseg.training.config import RunConfig
    from skinseg.training.run import run_training
    from tests.conftest import TINY_RUN, make_simple

    data = make_simple(tmp_path / "data", n_train=10, n_test=3)
    runs = [str(tmp_path / name) for name in ("a", "b")]
    for seed, out in enumerate(runs):
        run_training(RunConfig(data=data, out=out, seed=seed, **TINY_RUN), verbose=0)
    a = RunFolder(runs[0])
    evaluate_run(a, figures=False)
    settings = a.read_summary()["settings"]
    assert evaluation_is_current(a, settings)
    # another network restored with an older time (cp -p, rsync -a, tar) is not the one scored
    stamp = os.stat(a.best_network).st_mtime - 3600
    shutil.copyfile(RunFolder(runs[1]).best_network, a.best_network)
    os.utime(a.best_network, (stamp, stamp))
    assert not evaluation_is_current(a, settings)
    evaluate_run(a, figures=False)
    assert evaluation_is_current(a, settings)
    # a per-image table that is not the one the summary was written with (a kill between the two)
    with open(a.per_image_path, "a", encoding="utf-8") as handle:
        handle.write("\n")
    assert not evaluation_is_current(a, settings)
    # a run that train.py holds is not scored, nor written into
    held = RunFolder(runs[1])
    held.lock()
    try:
        with pytest.raises(EvaluationError, match="is in use by another process \\(train.py training it"):
            evaluate_run(runs[1], figures=False)
        assert not os.path.exists(held.summary_path)
    finally:
        held.unlock()


@pytest.mark.integration
def test_an_export_that_fails_midway_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    import tensorflow as tf

    from skinseg.core.run_folder import file_digest
    from skinseg.inference.export import export
    from skinseg.inference.segmenter import PredictError, Segmenter

    out = str(tmp_path / "exported")
    export(Segmenter(build_model("baseline", 32, width=2, depth=1)), out)
    kept = ("model.keras", "model.tflite", "postprocess.json")
    before = {name: file_digest(os.path.join(out, name)) for name in kept}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", broken)
    with pytest.raises(PredictError, match=r"could not be written \(No space left on device\); the previous"):
        export(Segmenter(build_model("baseline", 32, width=4, depth=1)), out, overwrite=True)
    assert {name: file_digest(os.path.join(out, name)) for name in before} == before
    assert sorted(os.listdir(out)) == EXPORTED


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("resume/state.json", [1, 2], "not a resume state written by train.py"),
        (
            "resume/state.json",
            {"completed_epochs": "2", "weights": "w.h5", "best": 0.5, "best_epoch": 1},
            "completed_epochs = '2' is not of the type",
        ),
        ("resume/state.json", {"completed_epochs": 2, "best": 0.5, "best_epoch": 1}, "weights is missing"),
        (
            "resume/state.json",
            {"completed_epochs": 2, "weights": "w.h5", "best": 0.5, "best_epoch": 1, "extra": 1},
            r"unknown key\(s\) extra",
        ),
        (
            "resume/state.json",
            {"completed_epochs": 2, "weights": "../w.h5", "best": 0.5, "best_epoch": 1},
            "not a value train.py writes",
        ),
        (
            "best.json",
            {"epoch": True, "monitor": "val_dice", "value": 0.5},
            "epoch = True is not of the type",
        ),
        ("best.json", {"epoch": 3, "monitor": "val_dice"}, "value is missing"),
    ],
)
def test_damaged_run_records_name_the_file_and_the_key(tmp_path, name, content, message):
    from skinseg.core.errors import RunFolderError

    run = RunFolder(str(tmp_path / "run"))
    os.makedirs(os.path.dirname(run.file(name)), exist_ok=True)
    with open(run.file(name), "w", encoding="utf-8") as handle:
        json.dump(content, handle)
    read = run.read_resume_state if name.startswith("resume") else run.read_best
    with pytest.raises(RunFolderError, match=message) as err:
        read()
    assert run.file(name) in str(err.value)


def test_records_of_earlier_versions_load_with_their_defaults(tmp_path):
    run = RunFolder(str(tmp_path / "run"))
    os.makedirs(run.resume_dir)
    with open(run.state_path, "w", encoding="utf-8") as handle:  # version 0.1: no digests, no RNG state
        json.dump(
            {"completed_epochs": 2, "weights": "epoch0002.weights.h5", "best": 0.7, "best_epoch": 2}, handle
        )
    with open(run.best_record_path, "w", encoding="utf-8") as handle:
        json.dump({"epoch": 2, "monitor": "val_dice", "value": 0.7}, handle)
    assert run.read_resume_state()["completed_epochs"] == 2
    assert run.read_best()["epoch"] == 2


def test_a_file_system_that_cannot_lock_folders_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    import errno

    from skinseg.core import locking

    def nfs(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(locking.fcntl, "flock", nfs)
    monkeypatch.setattr(locking, "_warned", False)
    with FolderLock(str(tmp_path / "out"), "masks", RuntimeError):
        pass
    assert "cannot lock folders" in caplog.text


@pytest.mark.integration
def test_masks_and_an_export_into_one_folder_share_its_lock(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    keras.utils.save_img(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))
    model = _tiny(str(tmp_path / "m.keras"))
    out = str(tmp_path / "both")
    assert predict.main(["--model", model, str(images), "--out", out, "--export", out]) == 0
    assert {"a.png", "saved_model", "model.tflite"} <= set(os.listdir(out))


def test_a_killed_runs_staging_folders_are_removed_by_the_next_run(tmp_path):
    import subprocess
    import sys

    from skinseg.core.atomic import remove_stale_staging

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(gone.stdout)  # a process that has exited
    for name in (f".extract-{dead}-ISIC2018.zip", f".extract-{os.getpid()}-mine.zip", "keep.txt"):
        (tmp_path / name).mkdir() if name.startswith(".") else (tmp_path / name).write_text("x")
    removed = remove_stale_staging(str(tmp_path), ".extract-")
    assert removed == [str(tmp_path / f".extract-{dead}-ISIC2018.zip")]
    assert sorted(os.listdir(tmp_path)) == [f".extract-{os.getpid()}-mine.zip", "keep.txt"]


def _limit_file_size(limit: int):
    """A preexec_fn: files may grow to `limit` bytes, and a write beyond fails with EFBIG ("File too
    large", as a full disk fails with ENOSPC) instead of killing the process (SIGXFSZ ignored)."""
    import resource
    import signal

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


@pytest.mark.integration
def test_an_export_that_runs_out_of_space_leaves_the_previous_one_whole_and_no_staging(tmp_path):
    """A real write failure from the operating system, in a predict.py --export process: its files may
    not grow past 400 kB, which the larger network's SavedModel graph (~530 kB) passes mid-write."""
    import subprocess
    import sys

    from skinseg.core.run_folder import file_digest
    from tests.conftest import ROOT

    small, large = str(tmp_path / "small.keras"), str(tmp_path / "large.keras")
    build_model("baseline", 32, width=2, depth=1).save(small)
    build_model("baseline", 32, width=8, depth=2).save(large)
    out = str(tmp_path / "exported")
    first = subprocess.run(
        [sys.executable, "predict.py", "--model", small, "--export", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr[-2000:]

    def digests():
        return {
            os.path.relpath(os.path.join(folder, name), out): file_digest(os.path.join(folder, name))
            for folder, _, names in os.walk(out)
            for name in names
        }

    before = digests()
    done = subprocess.run(
        [sys.executable, "predict.py", "--model", large, "--export", out, "--overwrite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(400_000),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: {out}: the export could not be written (" in done.stderr
    assert "File too large); the previous export, if any, is unchanged" in done.stderr
    assert "Traceback" not in done.stderr
    assert digests() == before  # byte for byte, and no staging folder left beside it


def _out_of_memory(*args, **kwargs):
    import cv2

    err = cv2.error("OpenCV(5.0.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate")
    err.code = -4  # what cv2.resize raises when an address-space or container limit is reached
    raise err


def test_an_image_too_large_for_the_memory_left_is_named_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    """The two places an 81-MP image meets a memory limit (measured under `ulimit -v 3000000`:
    its mask resized back to 9000x9000): the decode, and the mask at full size."""
    from skinseg.data_pipeline import image_io
    from skinseg.inference import segmenter as segmenter_module

    model = _tiny(str(tmp_path / "m.keras"))
    images = tmp_path / "in"
    images.mkdir()
    keras.utils.save_img(str(images / "small.png"), np.full((40, 30, 3), 90, np.uint8))
    keras.utils.save_img(str(images / "huge.png"), np.full((60, 50, 3), 90, np.uint8))
    real = segmenter_module.to_original

    def resize_back(values, size, *args):
        return _out_of_memory() if size == (60, 50) else real(values, size, *args)

    out = tmp_path / "out"
    before = tmp_path / "before"  # masks of both from an earlier run, then rewritten with --overwrite
    assert predict.main(["--model", model, str(images), "--out", str(before)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(segmenter_module, "to_original", resize_back)
    assert predict.main(["--model", model, str(images), "--out", str(before), "--overwrite"]) == 1
    assert f"(from an earlier run, {before / 'huge.png'} removed)" in capsys.readouterr().err
    assert sorted(os.listdir(before)) == [".skinseg-predict.json", "predictions.csv", "small.png"]
    with open(before / "predictions.csv", encoding="utf-8") as handle:
        assert [row.split(",")[1] for row in handle.read().splitlines()[1:]] == ["small.png"]
    assert predict.main(["--model", model, str(images), "--out", str(out)]) == 1
    printed = capsys.readouterr()
    err = printed.err
    assert (
        f"{images / 'huge.png'}: not enough memory to resize its mask to the image's size (50x60, 0 MP)"
        in err
    )
    assert sorted(os.listdir(out)) == [".skinseg-predict.json", "predictions.csv", "small.png"]
    assert "1 input(s) not segmented" in printed.out and "Traceback" not in err
    assert predict.main(["--model", model, str(images), "--out", str(tmp_path / "strict"), "--strict"]) == 2
    assert "not enough memory to resize its mask" in capsys.readouterr().err

    monkeypatch.setattr(image_io, "_read_image", lambda *a: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(DataError, match=r"huge.png: not enough memory to decode it \(50x60, 0 MP\)"):
        image_io.read_image(str(images / "huge.png"))


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (MemoryError(), "MemoryError"),
        ("tf", "OOM when allocating tensor with shape[8,64,128,128]"),
    ],
)
def test_running_out_of_memory_elsewhere_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, raised, said):
    import tensorflow as tf

    from skinseg.inference import predict_folder

    if raised == "tf":  # what TensorFlow's allocator raises (a full GPU, a container's limit)
        raised = tf.errors.ResourceExhaustedError(None, None, f"{said} on /job:localhost\nmore detail")
    model = _tiny(str(tmp_path / "m.keras"))
    images = tmp_path / "in"
    images.mkdir()
    keras.utils.save_img(str(images / "a.png"), np.zeros((8, 8, 3), np.uint8))

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(predict_folder, "write_masks", fail)
    assert predict.main(["--model", model, str(images), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: out of memory ({said}")
    assert err[-1].endswith(
        "); lower --batch-size or free memory (predict.py --max-pixels N refuses images too large to decode)"
    )
