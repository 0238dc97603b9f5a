"""Faults (docs/FAULTS.md, "Faults"): a second writer, a model that is not a segmenter, leakage between
splits, tampered run state, failures of the system, interruptions. Each case asserts the exit
code, the message, and that nothing else was lost."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from skinseg.cli import evaluate, predict, train
from skinseg.cli.data import main as data_main
from skinseg.core.run_folder import RunFolder
from skinseg.data_pipeline.split import read_split
from tests.conftest import ROOT, TINY_TRAIN_ARGS, make_simple, write_pairs

pytestmark = pytest.mark.integration  # trains models and starts processes


def _train(data, out, *extra):
    return train.main([*TINY_TRAIN_ARGS, "--data", data, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    data = make_simple(base / "data", n_train=8, n_test=2)
    out = base / "run"
    assert _train(data, out, "--epochs", "2") == 0
    return data, str(out)


def _copy_run(source, target):
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    return str(target)


# --- one writer per run ------------------------------------------------------------------------


def test_a_second_writer_is_refused_and_the_live_run_finishes(tmp_path, capsys):
    data = make_simple(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "run"
    env = {**os.environ, "SKINSEG_CHECKPOINT_DELAY": "1.5"}  # slow checkpoints: a long-lived run
    args = [sys.executable, "train.py", *TINY_TRAIN_ARGS, "--epochs", "3", "--data", data, "--out", str(out)]
    first = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        end = time.time() + 120
        while not glob.glob(str(out / ".tmp-*")) and time.time() < end:  # a checkpoint in flight
            time.sleep(0.02)
        for extra in ([], ["--overwrite"]):
            assert _train(data, out, "--epochs", "3", *extra) == 2
            assert f"{out} is in use by process {first.pid}" in capsys.readouterr().err
        assert train.main(["--out", str(out), "--resume"]) == 2
        assert "is in use by process" in capsys.readouterr().err
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    run = RunFolder(out)
    assert [r["epoch"] for r in run.read_history()] == [1, 2, 3]
    for path in (run.best_network, run.last_network):
        keras.models.load_model(path)
    assert not glob.glob(str(out / ".tmp-*")) and not glob.glob(str(out / "resume" / ".tmp-*"))


def test_two_runs_started_together_one_wins_and_the_other_exits_cleanly(tmp_path):
    data = make_simple(tmp_path / "data", n_train=8, n_test=2)
    out = tmp_path / "run"
    env = {**os.environ, "SKINSEG_CHECKPOINT_DELAY": "1"}
    args = [sys.executable, "train.py", *TINY_TRAIN_ARGS, "--data", data, "--out", str(out)]
    runs = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "Traceback" not in loser and ("is in use by process" in loser or "already exists" in loser)
    keras.models.load_model(RunFolder(out).best_network)


# --- only segmenters are scored ------------------------------------------------------------------


def _not_segmenters(folder):
    inputs = keras.Input((64, 64, 3))
    classifier = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(inputs)))
    softmax = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda x: x[..., :1])(inputs))
    models = {
        "classifier": (classifier, "not a binary segmenter: input (None, 64, 64, 3), output (None, 1)"),
        "softmax": (softmax, "(a 2-channel softmax? save a model whose output is the lesion channel)"),
        "dense": (dense, "not a segmenter of RGB images: input (None, 10)"),
        "lambda": (lambda_model, "holds a Lambda layer (arbitrary Python code); refused"),
    }
    for name, (model, _) in models.items():
        model.save(os.path.join(folder, f"{name}.keras"))
    return {name: message for name, (_, message) in models.items()}


def test_a_model_that_is_not_a_segmenter_is_refused(trained, tmp_path, capsys):
    data, out = trained
    images = os.path.join(data, "testing", "image")
    for name, message in _not_segmenters(str(tmp_path)).items():
        code = predict.main(
            ["--model", str(tmp_path / f"{name}.keras"), images, "--out", str(tmp_path / "m")]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (name, err)
        run = _copy_run(out, tmp_path / f"run-{name}")
        os.replace(tmp_path / f"{name}.keras", os.path.join(run, "best.keras"))
        assert evaluate.main(["--run", run, "--batch-size", "1"]) == 2
        assert message in capsys.readouterr().err, name
    assert not (tmp_path / "m").exists() or os.listdir(tmp_path / "m") == []


# --- leakage -------------------------------------------------------------------------------------


def _leaky(root, how):
    data = make_simple(root, n_train=8, n_test=2)
    test_image = sorted(glob.glob(os.path.join(data, "testing", "image", "*")))[0]
    test_mask = sorted(glob.glob(os.path.join(data, "testing", "label", "*")))[0]
    if how == "same ID":
        stem = os.path.splitext(os.path.basename(test_image))[0]
        write_pairs(os.path.join(data, "training", "image"), os.path.join(data, "training", "label"), [stem])
    else:  # a byte-identical copy under another name
        import shutil

        shutil.copy(test_image, os.path.join(data, "training", "image", "COPY_0000001.jpg"))
        shutil.copy(test_mask, os.path.join(data, "training", "label", "COPY_0000001_segmentation.png"))
    return data


@pytest.mark.parametrize(("how", "said"), [("same ID", "(ID ISIC_"), ("copy", "(the same pixels as")])
def test_an_image_in_two_splits_is_caught_by_inspect_train_and_evaluate(tmp_path, capsys, how, said):
    data = _leaky(tmp_path / "data", how)
    assert data_main(["inspect", data, "--strict"]) == 1
    out = capsys.readouterr().out
    assert "also in the train split" in out and said in out
    run = tmp_path / "run"
    assert _train(data, run) == 2
    err = capsys.readouterr().err
    assert "1 image(s) in more than one split" in err and "--allow-overlap" in err
    assert not run.exists()
    assert _train(data, run, "--allow-overlap") == 0
    record = RunFolder(run).read_split_record()
    assert len(record["allowed_overlap"]) == 1 and said.strip("(") in record["allowed_overlap"][0]["problem"]
    capsys.readouterr()
    assert evaluate.main(["--run", str(run)]) == 0  # the run's own test split, overlap allowed at training


def test_duplicates_within_a_split_are_a_warning(tmp_path, capsys):
    import shutil

    data = make_simple(tmp_path / "data", n_train=8, n_test=2)
    train_images = os.path.join(data, "training", "image")
    first = sorted(os.listdir(train_images))[0]
    shutil.copy(os.path.join(train_images, first), os.path.join(train_images, "TWIN_0000000.jpg"))
    labels = os.path.join(data, "training", "label")
    shutil.copy(
        os.path.join(labels, sorted(os.listdir(labels))[0]),
        os.path.join(labels, "TWIN_0000000_segmentation.png"),
    )
    assert data_main(["inspect", data, "--strict"]) == 0
    assert "warning " in capsys.readouterr().out
    assert _train(data, tmp_path / "run") == 0


def test_evaluating_on_training_images_is_refused_unless_allowed(trained, tmp_path, capsys):
    data, out = trained
    run = _copy_run(out, tmp_path / "run")
    train_data = [os.path.join(data, "training", "image"), os.path.join(data, "training", "label")]
    assert evaluate.main(["--run", run, "--data", *train_data]) == 2
    assert (
        "the run trained or selected its model on this image (8 of the 8 test images"
        in capsys.readouterr().err
    )
    assert evaluate.main(["--run", run, "--data", *train_data, "--allow-overlap"]) == 0


# --- names ---------------------------------------------------------------------------------------


def test_names_that_are_not_utf8_or_not_normalised_pair_and_are_named(tmp_path, capsys):
    data = make_simple(tmp_path / "data", n_train=8, n_test=2)
    images, labels = (os.path.join(data, "training", d) for d in ("image", "label"))
    write_pairs(images, labels, ["tmp"], start=50)
    os.rename(os.path.join(images, "tmp.jpg"), os.fsencode(images) + b"/ISIC_\xff01.jpg")
    os.rename(
        os.path.join(labels, "tmp_segmentation.png"), os.fsencode(labels) + b"/ISIC_\xff01_segmentation.png"
    )
    write_pairs(images, labels, ["tmp2"], start=51)
    os.rename(os.path.join(images, "tmp2.jpg"), os.path.join(images, "cafe\u0301.jpg"))  # NFD
    os.rename(
        os.path.join(labels, "tmp2_segmentation.png"), os.path.join(labels, "caf\u00e9_segmentation.png")
    )
    assert data_main(["inspect", data]) == 0
    out = capsys.readouterr().out
    assert "ISIC_\\udcff01.jpg: file name is not valid UTF-8" in out
    assert "without a" not in out  # both pairs found: no orphan image or mask
    assert _train(data, tmp_path / "run") == 0
    split = read_split(RunFolder(tmp_path / "run").split_path)
    ids = {p.id for name in ("train", "validation") for p in split[name]}
    assert "caf\u00e9" in ids and "ISIC_\udcff01" in ids
    assert evaluate.main(["--run", str(tmp_path / "run")]) == 0


# --- tampered run state --------------------------------------------------------------------------


def _edit_json(path, **changes):
    data = json.load(open(path))
    data.update(changes)
    json.dump(data, open(path, "w"))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda r: _edit_json(r.config_path, image_size=64),
            "config.json: changed since the run was trained (image_size is 64, was 32)",
        ),
        (
            lambda r: _edit_json(r.config_path, model="deeper"),
            "config.json: changed since the run was trained (model is 'deeper', was 'baseline')",
        ),
        (lambda r: open(r.history_path, "w").close(), "history.csv: holds epochs none, but the resume state"),
        (
            lambda r: open(r.history_path, "w").write("epoch,loss\n1,oops\n"),
            "history.csv: not a history written by train.py",
        ),
        (lambda r: open(r.state_path, "w").write("garbage"), "state.json: unreadable"),
        (lambda r: open(r.config_path, "w").write("{"), "config.json: unreadable"),
        (lambda r: _truncate(r.last_network), "last.keras: differs from the file written at epoch 2"),
        (
            lambda r: _truncate(r.read_resume_state()["weights_path"]),
            "epoch0002.weights.h5: differs from the file written",
        ),
    ],
    ids=[
        "image_size edited",
        "model edited",
        "history emptied",
        "history garbage",
        "state garbage",
        "config garbage",
        "last.keras truncated",
        "resume weights truncated",
    ],
)
def test_tampered_run_state_is_refused_naming_the_file(trained, tmp_path, capsys, tamper, message):
    run = RunFolder(_copy_run(trained[1], tmp_path / "run"))
    tamper(run)
    assert train.main(["--out", run.path, "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) <= 3, err


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


# --- the system fails ----------------------------------------------------------------------------


def test_out_that_is_a_file_or_under_a_file(tmp_path, trained, capsys):
    data, _ = trained
    (tmp_path / "plain").write_text("a file")
    assert _train(data, tmp_path / "plain") == 2
    assert "plain: exists and is not a folder" in capsys.readouterr().err
    assert _train(data, tmp_path / "plain" / "run") == 2
    assert "plain/run: not a directory" in capsys.readouterr().err
    assert (tmp_path / "plain").read_text() == "a file"


@pytest.mark.parametrize(
    ("errno_", "said"),
    [(28, "no space left on the device"), (13, "permission denied"), (30, "read-only file system")],
)
def test_a_failing_disk_stops_with_one_line_and_no_half_written_file(
    tmp_path, trained, capsys, monkeypatch, errno_, said
):
    """The checkpoint writer fails as a full, forbidden or read-only disk makes it fail (root
    ignores permissions, so the failure is injected)."""
    data, _ = trained
    from skinseg.core import run_folder

    original = run_folder.RunFolder.save_network

    def failing(self, network, path):
        raise OSError(errno_, os.strerror(errno_), path)

    monkeypatch.setattr(run_folder.RunFolder, "save_network", failing)
    out = tmp_path / "run"
    assert _train(data, out) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: {out}/best.keras: {said}"
    assert not glob.glob(str(out / ".tmp-*")) and not (out / "best.keras").exists()
    monkeypatch.setattr(run_folder.RunFolder, "save_network", original)


def _interrupt(args, point: str, tmp_path, signum=signal.SIGINT):
    """Runs `args` held at the fault point `point` (skinseg.core.faults): the process reports
    that it has reached it by writing a marker file, and waits there; only then is SIGINT sent.
    No race with the work: however loaded the machine, the signal lands mid-way."""
    marker = tmp_path / f"reached-{point.replace(':', '-')}"
    env = {**os.environ, "SKINSEG_FAULT_POINT": point, "SKINSEG_FAULT_MARKER": str(marker)}
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A shell starts background jobs (`pytest ... &`) with SIGINT ignored, and Python then
        # installs no Ctrl-C handler: the child gets the default back, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    end = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < end:
        time.sleep(0.02)
    assert marker.exists(), f"{point} never reached: exit {process.poll()}"
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def test_ctrl_c_during_predict_and_evaluate_exits_130_keeping_whole_files(trained, tmp_path):
    data, out = trained
    folder = tmp_path / "images"
    write_pairs(folder, tmp_path / "labels", [f"P{k:03d}" for k in range(12)], size=(40, 40))
    masks = tmp_path / "masks"
    code, err = _interrupt(
        [sys.executable, "predict.py", "--model", out, str(folder), "--out", str(masks), "--batch-size", "1"],
        "predict.mask_written:3",
        tmp_path,
    )
    assert code == 130 and "Traceback" not in err and err.strip().endswith("interrupted")
    from PIL import Image

    written = [n for n in os.listdir(masks) if n.endswith(".png")]  # not its record nor predictions.csv
    assert 3 <= len(written) < 12 and not [n for n in written if n.startswith(".tmp-")]
    for name in written:
        Image.open(masks / name).load()  # whole files only
    runs = tmp_path / "runs"
    for k in range(3):
        _copy_run(out, runs / f"r{k}")
    code, err = _interrupt(
        [sys.executable, "evaluate.py", "--all", "--runs-dir", str(runs)], "evaluate.run_scored:1", tmp_path
    )
    assert code == 130 and "Traceback" not in err and err.strip().endswith("interrupted")
    assert os.path.exists(runs / "r0" / "eval" / "summary.json")
    assert not os.path.exists(runs / "r2" / "eval" / "summary.json")  # stopped in the first run
    assert not os.path.exists(runs / "results.md")


def test_sigterm_is_handled_like_ctrl_c_and_exits_143(trained, tmp_path):
    _, out = trained
    folder = tmp_path / "images"
    write_pairs(folder, tmp_path / "labels", [f"P{k:03d}" for k in range(8)], size=(40, 40))
    masks = tmp_path / "masks"
    argv = [
        sys.executable,
        "predict.py",
        "--model",
        out,
        str(folder),
        "--out",
        str(masks),
        "--batch-size",
        "1",
    ]
    code, err = _interrupt(argv, "predict.mask_written:2", tmp_path, signal.SIGTERM)
    assert code == 143 and "Traceback" not in err and err.strip().endswith("terminated")
    assert not [n for n in os.listdir(masks) if n.startswith(".tmp-")]


def test_a_figure_lost_in_a_kill_is_drawn_again(trained, tmp_path):
    _, out = trained
    runs = tmp_path / "runs"
    run = RunFolder(_copy_run(out, runs / "r"))
    assert evaluate.main(["--all", "--runs-dir", str(runs)]) == 0
    os.remove(run.cases_path)  # as after a kill between summary.json and cases.png
    assert evaluate.main(["--all", "--runs-dir", str(runs)]) == 0
    assert os.path.exists(run.cases_path)


def test_a_lambda_layer_is_never_executed(tmp_path, trained, capsys):
    marker = tmp_path / "executed"
    inputs = keras.Input((32, 32, 3))
    # no closure (Keras serialises the lambda's code, constants included): it creates `marker` when run
    body = eval(f"lambda x: x[..., :1] * 0 + float(open({str(marker)!r}, 'w').close() or 0)")
    outputs = keras.layers.Lambda(body)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "evil.keras")
    if marker.exists():
        marker.unlink()  # tracing while saving ran it here; loading must not
    images = os.path.join(trained[0], "testing", "image")
    assert predict.main(["--model", str(tmp_path / "evil.keras"), images, "--out", str(tmp_path / "o")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


# --- found by review: each a regression test -----------------------------------------------------


def test_a_folder_with_someone_elses_config_json_is_never_emptied(trained, tmp_path, capsys):
    data, _ = trained
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("x")
    (project / "config.json").write_text('{"name": "app"}')
    (project / "important.csv").write_text("d")
    for extra in ([], ["--overwrite"]):
        assert _train(data, project, *extra) == 2
        assert "is not a run folder of train.py" in capsys.readouterr().err
    assert sorted(os.listdir(project)) == ["config.json", "important.csv", "src"]  # not even a .lock


def test_resume_without_its_state_after_finished_epochs_is_refused(trained, tmp_path, capsys):
    import shutil

    run = RunFolder(_copy_run(trained[1], tmp_path / "run"))
    shutil.rmtree(run.resume_dir)
    before = open(run.history_path).read()
    assert train.main(["--out", run.path, "--resume", "--epochs", "3"]) == 2
    assert "resume/state.json: missing, but" in capsys.readouterr().err
    assert open(run.history_path).read() == before


def test_a_failed_resume_leaves_the_configuration_as_it_was(trained, tmp_path, capsys):
    run = RunFolder(_copy_run(trained[1], tmp_path / "run"))
    record = json.load(open(run.split_path))
    record["test"][0]["image"] = str(tmp_path / "moved.jpg")
    json.dump(record, open(run.split_path, "w"))
    before = open(run.config_path).read()
    assert train.main(["--out", run.path, "--resume", "--epochs", "3"]) == 2
    assert "no longer exists" in capsys.readouterr().err
    assert open(run.config_path).read() == before


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--model", "hardnet_mseg", "--depth", "2"], "--depth applies to the UNet family only"),
        (["--image-size", "33"], "--image-size 33 is not divisible by 2**depth = 2"),
        (["--width", "0"], "--width must be at least 1"),
        (["--lr-schedule", "step", "--step-every", "0"], "step_every must be at least 1"),
    ],
)
def test_model_options_are_checked_before_anything_is_written(tmp_path, trained, capsys, args, said):
    data, _ = trained
    out = tmp_path / "run"
    assert train.main([*TINY_TRAIN_ARGS, "--data", data, *args, "--out", str(out)]) == 2
    assert said in capsys.readouterr().err
    assert not out.exists()


def test_output_options_that_make_no_sense_are_refused(trained, tmp_path, capsys):
    data, out = trained
    images = os.path.join(data, "testing", "image")
    for argv in (
        ["predict", "--model", out, images, "--out", images],  # masks over the images
        ["predict", "--model", out, images, "--out", __file__],  # a file
        ["train", "--out", out, "--resume", "--overwrite"],
        ["evaluate", "--run", out, "--threshold", "5"],
        ["evaluate", "--run", out, "--batch-size", "0"],
    ):
        command = {"predict": predict, "train": train, "evaluate": evaluate}[argv[0]]
        try:
            code = command.main(argv[1:])
        except SystemExit as done:  # argparse's own refusals
            code = done.code
        assert code == 2, argv
    assert len(os.listdir(images)) == 2  # the images are still there
    export = tmp_path / "export"
    assert predict.main(["--model", out, "--export", str(export)]) == 0
    assert predict.main(["--model", out, "--export", str(export)]) == 2
    assert "holds an export already; pass --overwrite" in capsys.readouterr().err


def test_evaluate_all_leaves_out_a_run_it_cannot_score_and_says_why(trained, tmp_path, capsys):
    data, out = trained
    runs = tmp_path / "runs"
    _copy_run(out, runs / "good")
    pair = tmp_path / "pair"
    assert _train(os.path.join(data, "training", "image"), pair) == 2  # (images without masks folder)
    images, labels = os.path.join(data, "training", "image"), os.path.join(data, "training", "label")
    assert train.main([*TINY_TRAIN_ARGS, "--data", images, labels, "--out", str(runs / "no_test")]) == 0
    capsys.readouterr()
    assert evaluate.main(["--all", "--runs-dir", str(runs)]) == 0
    table = open(runs / "results.md").read()
    assert "| good |" in table and "- no_test: " in table and "no test split" in table
    assert evaluate.main(["--all", "--runs-dir", str(runs), "--baseline", "nosuch"]) == 2
    assert "--baseline nosuch: no such evaluated run; runs: good" in capsys.readouterr().err


def test_verbose_0_is_quiet(trained, tmp_path):
    data, _ = trained
    args = [sys.executable, "train.py", *TINY_TRAIN_ARGS, "--data", data, "--out", str(tmp_path / "q")]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)  # --verbose 0 in TINY
    assert done.returncode == 0 and "epoch 1/" not in done.stderr
    assert "epoch 1/1" in open(tmp_path / "q" / "train.log").read()  # the log keeps everything


def test_a_disk_that_fills_names_the_file_it_was_writing(trained, tmp_path, capsys, monkeypatch):
    data, _ = trained

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")  # as zipfile and HDF5 raise it: no file named

    monkeypatch.setattr(keras.Model, "save", full)
    out = tmp_path / "run"
    assert _train(data, out) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"error: {out}/best.keras: no space left on the device"
    )


def test_a_run_name_that_is_not_utf8_is_evaluated(trained, tmp_path):
    run = _copy_run(trained[1], os.fsdecode(os.fsencode(tmp_path) + b"/run_\xff"))
    assert evaluate.main(["--run", run]) == 0
    assert os.path.exists(os.path.join(run, "eval", "cases.png"))
