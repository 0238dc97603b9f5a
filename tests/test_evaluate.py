import csv
import json
import os
import time

import numpy as np
import pytest

import evaluate
from data_pipeline.image_io import read_mask
from tests.conftest import TINY_RUN
from training.config import RunConfig
from training.run import run_training


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs (a plain baseline and an augmented one) in one runs folder."""
    from tests.conftest import make_simple

    base = tmp_path_factory.mktemp("eval")
    data = make_simple(base / "data", n_train=12, n_test=6)
    runs_dir = base / "runs"
    run_training(RunConfig(data=data, out=str(runs_dir / "baseline"), **TINY_RUN), verbose=0)
    run_training(
        RunConfig(data=data, out=str(runs_dir / "baseline-aug"), aug=True, seed=1, **TINY_RUN), verbose=0
    )
    return str(runs_dir)


def test_evaluate_run_writes_per_image_csv_and_summary(runs):
    run = os.path.join(runs, "baseline")
    summary = evaluate.evaluate_run(run)
    rows = list(csv.DictReader(open(os.path.join(run, "eval", "per_image.csv"))))
    assert len(rows) == 6 == summary["n"]
    assert {"id", "dice", "jaccard", "threshold_jaccard", "hd", "hd95", "asd", "assd", "empty_case"} <= set(
        rows[0]
    )
    stored = json.load(open(os.path.join(run, "eval", "summary.json")))
    dice = stored["metrics"]["dice"]
    assert dice["mean"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1]
    assert stored["test_loss"] > 0 and stored["train_loss"] > 0 and stored["params"] > 0
    assert stored["settings"]["at"] == "input"
    assert os.path.exists(os.path.join(run, "eval", "cases.png"))


def test_at_original_scores_full_size_masks(runs):
    run = os.path.join(runs, "baseline")
    summary = evaluate.evaluate_run(run, at="original", tta=True, figures=False)
    rows = list(csv.DictReader(open(os.path.join(run, "eval", "per_image.csv"))))
    truth = read_mask(json.load(open(os.path.join(run, "split.json")))["test"][0]["mask"]).array
    assert int(rows[0]["truth_pixels"]) == int(truth.sum())  # 48x64 originals, not 32x32
    assert summary["settings"] == {
        "at": "original",
        "tta": True,
        "threshold": 0.5,
        "empty": "diagonal",
        "data": None,
        "version": evaluate.SUMMARY_VERSION,
    }


def test_all_writes_results_table_and_skips_up_to_date_runs(runs, caplog):
    assert evaluate.main(["--all", "--runs-dir", runs]) == 0
    table = open(os.path.join(runs, "results.md")).read()
    header = next(line for line in table.splitlines() if line.startswith("| Run"))
    order = [
        "Train loss",
        "Test loss",
        "Dice",
        "Volume similarity",
        "Average surface distance",
        "Hausdorff distance",
        "Jaccard",
        "Threshold Jaccard",
        "HD95",
        "Parameters",
        "Inference ms/image",
    ]
    positions = [header.index(f"| {name} |") for name in order]
    assert positions == sorted(positions)
    assert "p vs baseline" in header
    assert table.count("**") >= 2 * 5  # the best of each column is bold
    assert os.path.exists(os.path.join(runs, "dice_boxplot.png"))
    stamp = os.path.getmtime(os.path.join(runs, "baseline", "eval", "summary.json"))
    time.sleep(0.01)
    assert evaluate.main(["--all", "--runs-dir", runs]) == 0
    assert os.path.getmtime(os.path.join(runs, "baseline", "eval", "summary.json")) == stamp
    assert "results are up to date" in caplog.text


def test_errors_name_the_file(tmp_path, capsys):
    run = tmp_path / "broken"
    run.mkdir()
    RunConfig(out=str(run)).save(str(run / "config.json"))
    assert evaluate.main(["--run", str(run)]) == 2
    assert f"{run}/best.keras: no such model file" in capsys.readouterr().err
    (run / "best.keras").write_text("not a zip")
    assert evaluate.main(["--run", str(run)]) == 2
    assert "best.keras: not a .keras model file" in capsys.readouterr().err
    assert evaluate.main(["--all", "--runs-dir", str(tmp_path / "none")]) == 2
