import json
import math
import os

import keras
import numpy as np
import pytest

from skinseg.core.run_folder import RunFolder, RunFolderError
from skinseg.training.config import RunConfig, default_run_name
from skinseg.training.run import TrainingDiverged, run_training
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.integration  # trains models or starts processes

TINY = {**TINY_RUN, "epochs": 2, "cache": "memory"}


def _config(data, out, **changes):
    return RunConfig(data=data, out=str(out), **{**TINY, **changes})


def _columns(rows, keys=("loss", "dice", "val_loss", "val_dice")):
    return np.array([[row[k] for k in keys] for row in rows])


def test_run_folder_is_complete(simple_dataset, tmp_path):
    config = _config(
        simple_dataset, tmp_path / "run", aug=True, flooding=0.05, lr_schedule="cosine", warmup_epochs=1
    )
    result = run_training(config, verbose=0)
    run = result.run_dir
    for name in (
        "config.json",
        "split.json",
        "history.csv",
        "best.keras",
        "last.keras",
        "curves.png",
        "train.log",
        "resume/state.json",
        "preprocessing.json",
        "postprocess.json",
    ):
        assert os.path.exists(os.path.join(run, name)), name
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]
    stored = RunConfig.load(os.path.join(run, "config.json"))
    # --max-filters auto, settled before anything was written: the preset's widths fit here
    assert stored.replace(created_with={}, capacity={}) == config.replace(out=run, max_filters=None)
    assert stored.capacity["capped"] is False and stored.capacity["parameters"] > 0
    assert json.load(open(os.path.join(run, "preprocessing.json"))) == stored.preprocessing.to_json()
    assert stored.created_with["keras"] == keras.__version__
    split = json.load(open(os.path.join(run, "split.json")))
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (10, 2, 4)
    assert not {r["id"] for r in split["train"]} & {r["id"] for r in split["validation"]}
    rows = RunFolder(run).read_history()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"loss", "dice", "val_loss", "val_dice", "lr", "time_s"} <= set(rows[0])
    assert rows[0]["lr"] < rows[1]["lr"] or rows[1]["lr"] < config.lr  # cosine warm-up/decay moved it
    model = keras.models.load_model(os.path.join(run, "best.keras"))
    assert model.name == "baseline" and [layer for layer in model.layers if "aug" in layer.name] == []
    assert "epoch 2/2" in open(os.path.join(run, "train.log")).read()


def test_same_seed_same_history_and_resume_equals_uninterrupted(simple_dataset, tmp_path):
    """Tolerance 1e-5 on every logged value (measured: identical to 6 digits on this CPU)."""
    straight = run_training(_config(simple_dataset, tmp_path / "a", epochs=3, aug=True), verbose=0)
    again = run_training(_config(simple_dataset, tmp_path / "b", epochs=3, aug=True), verbose=0)
    np.testing.assert_allclose(_columns(straight.history), _columns(again.history), atol=1e-5)

    interrupted = run_training(_config(simple_dataset, tmp_path / "c", epochs=1, aug=True), verbose=0)
    path = os.path.join(interrupted.run_dir, "config.json")
    stored = json.load(open(path))
    stored["epochs"] = 3  # as if the run had been stopped after its first epoch
    json.dump(stored, open(path, "w"))
    resumed = run_training(RunConfig(out=interrupted.run_dir), resume=True, verbose=0)
    assert resumed.completed_epochs == 3
    np.testing.assert_allclose(_columns(resumed.history), _columns(straight.history), atol=1e-5)


def test_run_folder_safety(simple_dataset, tmp_path):
    config = _config(simple_dataset, tmp_path / "run", epochs=1)
    run_training(config, verbose=0)
    with pytest.raises(RunFolderError, match="already exists; pass --resume"):
        run_training(config, verbose=0)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        run_training(_config(simple_dataset, tmp_path / "other"), resume=True, verbose=0)
    history = open(os.path.join(tmp_path / "run", "history.csv")).read()
    assert run_training(config, overwrite=True, verbose=0).completed_epochs == 1
    killed_early = tmp_path / "killed_before_config"  # only a temporary of config.json landed
    killed_early.mkdir()
    (killed_early / ".tmp-999-config.json").write_text("{")
    with pytest.raises(RunFolderError, match="nothing to resume"):
        run_training(_config(simple_dataset, killed_early), resume=True, verbose=0)
    assert sorted(os.listdir(killed_early)) == [".tmp-999-config.json"]  # no lock file left behind
    starting = tmp_path / "starting"  # another process holds it and has not written config.json yet
    starting.mkdir()
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); f.write('process 4242'); f.flush(); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
            str(starting / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match="starting is in use by process 4242"):
            run_training(_config(simple_dataset, starting), resume=True, verbose=0)
    finally:
        holder.kill()
        holder.wait()
    assert run_training(_config(simple_dataset, killed_early, epochs=1), verbose=0).completed_epochs == 1
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not a run folder"):
        run_training(_config(simple_dataset, precious), overwrite=True, verbose=0)
    assert (precious / "thesis.txt").read_text() == "keep me"
    assert open(os.path.join(tmp_path / "run", "history.csv")).read().count("\n") == history.count("\n")


class PoisonAfter(keras.layers.Layer):
    """Outputs NaN once it has run `steps` training steps."""

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x, training=False):
        if training:
            self.count.assign_add(1.0)
        return x + keras.ops.where(self.count > self.steps, math.nan, 0.0)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(simple_dataset, tmp_path):
    inputs = keras.Input((32, 32, 3))
    logits = PoisonAfter(3)(keras.layers.Conv2D(1, 1)(inputs))
    network = keras.Model(inputs, keras.layers.Activation("sigmoid", dtype="float32", name="mask")(logits))
    config = _config(simple_dataset, tmp_path / "run", epochs=3)  # 2 steps per epoch
    with pytest.raises(TrainingDiverged, match="epoch 2, step 2") as err:
        run_training(config, network=network, verbose=0)
    assert "last.keras, epoch 1" in str(err.value)
    assert [r["epoch"] for r in RunFolder(tmp_path / "run").read_history()] == [1]
    state = json.load(open(tmp_path / "run" / "resume" / "state.json"))
    assert state["completed_epochs"] == 1


def test_ema_validates_and_checkpoints_the_average_and_resumes_exactly(simple_dataset, tmp_path):
    """The raw weights train exactly as without EMA (training columns equal); validation and the
    checkpoints use the average: with a momentum of ~0 it is the raw weights (validation equal to
    the plain run: the swaps pair up), with 0.9 it differs. Resuming mid-run restores the raw
    weights for training and the average for the checkpoints (history equal to 1e-5)."""
    plain = run_training(_config(simple_dataset, tmp_path / "plain", epochs=3), verbose=0)
    nearly_raw = run_training(_config(simple_dataset, tmp_path / "raw", epochs=3, ema=1e-9), verbose=0)
    np.testing.assert_allclose(_columns(nearly_raw.history), _columns(plain.history), atol=1e-5)
    ema = run_training(_config(simple_dataset, tmp_path / "ema", epochs=3, ema=0.9), verbose=0)
    train_cols = ("loss", "dice")
    np.testing.assert_allclose(
        _columns(ema.history, train_cols), _columns(plain.history, train_cols), atol=1e-5
    )
    val_cols = ("val_loss",)
    assert np.abs(_columns(ema.history, val_cols) - _columns(plain.history, val_cols)).max() > 1e-4
    saved = keras.models.load_model(os.path.join(ema.run_dir, "last.keras")).get_weights()
    raw = keras.models.load_model(os.path.join(plain.run_dir, "last.keras")).get_weights()
    assert max(float(np.abs(a - b).max()) for a, b in zip(saved, raw)) > 1e-4

    interrupted = run_training(_config(simple_dataset, tmp_path / "cut", epochs=1, ema=0.9), verbose=0)
    path = os.path.join(interrupted.run_dir, "config.json")
    stored = json.load(open(path))
    stored["epochs"] = 3
    json.dump(stored, open(path, "w"))
    resumed = run_training(RunConfig(out=interrupted.run_dir), resume=True, verbose=0)
    np.testing.assert_allclose(_columns(resumed.history), _columns(ema.history), atol=1e-5)
    again = keras.models.load_model(os.path.join(resumed.run_dir, "last.keras")).get_weights()
    for a, b in zip(again, saved):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_run_from_an_older_version_resumes(simple_dataset, tmp_path):
    """Its resume state lacks the options added since (here --ema and --aug-policy): they had
    their defaults then, so extending it is no configuration change."""
    first = run_training(_config(simple_dataset, tmp_path / "old", epochs=1), verbose=0)
    path = os.path.join(first.run_dir, "resume", "state.json")
    state = json.load(open(path))
    for key in ("ema", "aug_policy"):
        del state["config"][key]
    json.dump(state, open(path, "w"))
    config_path = os.path.join(first.run_dir, "config.json")
    stored = json.load(open(config_path))
    stored["epochs"] = 2
    json.dump(stored, open(config_path, "w"))
    assert run_training(RunConfig(out=first.run_dir), resume=True, verbose=0).completed_epochs == 2


def test_default_run_name():
    assert default_run_name(RunConfig()) == "baseline-synthetic"
    name = default_run_name(RunConfig(model="deeper", width=16, aug=True, flooding=0.1, lr_schedule="step"))
    assert name == "deeper-w16-aug-flood0.1-lrstep-synthetic"
    strong = RunConfig(aug=True, aug_policy="strong", ema=0.99, data="/d/ISIC2018")
    assert default_run_name(strong) == "baseline-augstrong-ema0.99-ISIC2018"


def test_config_validation():
    with pytest.raises(ValueError, match="loss must be one of"):
        RunConfig(loss="l2")
    with pytest.raises(ValueError, match="val_fraction"):
        RunConfig(val_fraction=1.5)
    with pytest.raises(ValueError, match="--aug-policy strong needs --aug"):
        RunConfig(aug_policy="strong")
    with pytest.raises(ValueError, match=r"ema momentum must be in \[0, 1\)"):
        RunConfig(ema=1.0)
    with pytest.raises(ValueError, match="--ema with --strategy multiworker"):
        RunConfig(ema=0.99, strategy="multiworker")


MIRRORED_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from skinseg.training.distribute import split_cpu
split_cpu(2)
from skinseg.training.config import RunConfig
from skinseg.training.run import run_training

common = dict(data={data!r}, model="baseline", width=4, depth=2, image_size=32, batch_size=8, epochs=1,
              val_fraction=0.0)
single = run_training(RunConfig(strategy="default", out={out!r} + "/single", **common), verbose=0)
mirrored = run_training(RunConfig(strategy="mirrored", out={out!r} + "/mirrored", **common), verbose=0)
log = open({out!r} + "/mirrored/train.log").read()
print(json.dumps({{"single": single.history[0]["loss"], "mirrored": mirrored.history[0]["loss"],
                  "two_replicas": "2 replica(s)" in log}}))
"""


def test_mirrored_on_two_logical_cpus_matches_single_device(tmp_path):
    """Same data, seed and global batch; each replica normalises its half batch, so the first
    epoch's loss may differ slightly: tolerance 1 % relative (measured 0.04 %)."""
    import subprocess
    import sys

    from tests.conftest import ROOT, make_simple

    data = make_simple(tmp_path / "data", n_train=16, n_test=2)
    script = MIRRORED_SCRIPT.format(root=ROOT, data=data, out=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["two_replicas"]
    assert result["mirrored"] == pytest.approx(result["single"], rel=0.01)
