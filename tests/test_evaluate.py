import csv
import json
import math
import os
import time

import keras
import numpy as np
import pytest
from PIL import Image

from skinseg.cli import evaluate
from skinseg.data_pipeline.discovery import Pair
from skinseg.data_pipeline.image_io import read_mask
from skinseg.data_pipeline.split import write_split
from skinseg.evaluation.score_run import SUMMARY_VERSION, EvalSettings, evaluate_run
from skinseg.training.config import RunConfig
from skinseg.training.run import run_training
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.integration  # trains models or starts processes


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


def _rows(run):
    return list(csv.DictReader(open(os.path.join(run, "eval", "per_image.csv"))))


def test_evaluate_run_writes_per_image_csv_and_summary(runs):
    run = os.path.join(runs, "baseline")
    summary = evaluate_run(run)
    rows = _rows(run)
    assert len(rows) == 6 == summary["n"]
    expected = {"id", "dice", "jaccard", "threshold_jaccard", "hd", "hd95", "avg_hausdorff", "asd_medpy"}
    assert expected | {"assd_medpy", "empty_case", "loss"} <= set(rows[0])
    stored = json.load(open(os.path.join(run, "eval", "summary.json")))
    dice = stored["metrics"]["dice"]
    assert dice["mean"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    assert dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1]
    assert stored["test_loss"] == pytest.approx(np.mean([float(r["loss"]) for r in rows]))
    assert stored["test_loss"] > 0 and stored["train_loss"] > 0 and stored["params"] > 0
    assert stored["settings"]["at"] == "original"  # the default
    truth = read_mask(json.load(open(os.path.join(run, "split.json")))["test"][0]["mask"]).array
    assert int(rows[0]["truth_pixels"]) == int(truth.sum())  # 48x64 originals, not 32x32
    assert os.path.exists(os.path.join(run, "eval", "cases.png"))


def test_at_input_scores_the_resampled_masks(runs):
    run = os.path.join(runs, "baseline")
    summary = evaluate_run(run, EvalSettings(at="input", tta=True), figures=False)
    rows = _rows(run)
    assert max(int(r["truth_pixels"]) + int(r["pred_pixels"]) for r in rows) <= 2 * 32 * 32
    assert summary["settings"] == {
        "at": "input",
        "tta": True,
        "threshold": None,
        "empty": "diagonal",
        "data": None,
        "spacing": None,
        "version": SUMMARY_VERSION,
    }


def test_all_writes_results_table_and_skips_up_to_date_runs(runs, caplog):
    assert evaluate.main(["--all", "--runs-dir", runs]) == 0
    table = open(os.path.join(runs, "results.md")).read()
    assert "scored at each image's original size" in table
    header = next(line for line in table.splitlines() if line.startswith("| Run"))
    order = [
        "Train loss",
        "Test loss",
        "Dice",
        "Volume similarity",
        "ASD (ITK avg. Hausdorff)",  # the reference's column position
        "Hausdorff distance (ITK)",  # the reference's HD: SimpleITK's region Hausdorff
        "Jaccard",
        "Threshold Jaccard",
        "Boundary HD",
        "Boundary HD95",
        "MedPy ASD (pred. to truth)",
        "MedPy ASSD",
        "Parameters",
        "Inference ms/image",
    ]
    positions = [header.index(f"| {name} |") for name in order]
    assert positions == sorted(positions)
    assert "p vs baseline" in header
    assert table.count("**") >= 2 * 5  # the best of each column is bold
    assert os.path.exists(os.path.join(runs, "dice_boxplot-1.png"))
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
    assert f"{run}/best.keras: not written yet; the run has not completed an epoch" in capsys.readouterr().err
    (run / "best.keras").write_text("not a zip")
    assert evaluate.main(["--run", str(run)]) == 2
    assert "best.keras: not a .keras model file" in capsys.readouterr().err
    assert evaluate.main(["--all", "--runs-dir", str(tmp_path / "none")]) == 2


# Values, against hand computation. The images *are* their masks (lesion black on white, PNG),
# so a model can read the truth off its input: a 1x1 convolution gives sigmoid(k (0.5 - mean)),
# 0.5 exactly where a pixel is half lesion, i.e. where the resampled mask's edge lies.


def _scripted_model(size, kernel=None, bias=0.0, k=4.0, shift=0):
    """A 1x1 (or (2 shift + 1)-wide, shifting) convolution and a float32 sigmoid."""
    inputs = keras.Input((size, size, 3), name="image")
    width = 2 * shift + 1
    conv = keras.layers.Conv2D(1, (1, width), padding="same", name="logits")
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name="mask")(conv(inputs))
    model = keras.Model(inputs, outputs)
    weights = np.zeros((1, width, 3, 1), "float32")
    weights[0, 0, :, 0] = -k / 3 if kernel is None else kernel  # tap 0 reads `shift` columns left
    conv.set_weights([weights, np.array([k / 2 if kernel is None else bias], "float32")])
    return model


def _fake_run(root, images, model, size, **config):
    """A run folder holding `model` as best.keras and the given (id, image, mask) test pairs."""
    data = root / "data"
    (data / "image").mkdir(parents=True)
    (data / "label").mkdir(parents=True)
    pairs = []
    for id_, image, mask in images:
        Image.fromarray(image).save(data / "image" / f"{id_}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(data / "label" / f"{id_}_segmentation.png")
        pairs.append(
            Pair(id_, str(data / "image" / f"{id_}.png"), str(data / "label" / f"{id_}_segmentation.png"))
        )
    run = root / "run"
    run.mkdir()
    RunConfig(out=str(run), data=str(data), image_size=size, **config).save(str(run / "config.json"))
    write_split(str(run / "split.json"), {"train": [], "validation": [], "test": pairs})
    model.save(run / "best.keras")
    return str(run)


def _ellipses(shape, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    cy, cx = rng.uniform(0.35, 0.65, 2) * shape
    ry, rx = rng.uniform(0.15, 0.3, 2) * shape
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return np.repeat(np.where(mask, 0, 255).astype(np.uint8)[..., None], 3, axis=2), mask


@pytest.fixture
def odd_sized(tmp_path):
    """Lesions in 203x299 images (not a multiple of the 64 px input), an oracle model."""
    images = [(f"ISIC_{k:07d}", *_ellipses((203, 299), k)) for k in range(3)]
    return _fake_run(tmp_path, images, _scripted_model(64), 64), images


def test_oracle_scores_perfectly_at_input_and_nearly_at_original_size(odd_sized):
    run, images = odd_sized
    evaluate_run(run, EvalSettings(at="input"), figures=False)
    for row in _rows(run):
        assert float(row["dice"]) == 1.0 and float(row["hd"]) == 0.0 and float(row["avg_hausdorff"]) == 0.0
    evaluate_run(run, figures=False)  # at original size: bilinear upsampling of a 64 px map
    for row, (_, _, mask) in zip(_rows(run), images):
        assert int(row["truth_pixels"]) == mask.sum()
        assert float(row["dice"]) >= 0.99
        assert float(row["hd"]) <= 2.0  # one 64-px input pixel spans 4.7 x 3.2 original pixels
        assert float(row["avg_hausdorff"]) < 0.05


def test_padded_fit_is_undone_before_scoring(tmp_path):
    """--fit pad: the 203x299 images enter the 64 px input as 43x64 bands between black bars
    (lesions white here, so the bars are background to the oracle); scoring at input compares with
    the mask padded the same way, at original size the bars are cut off first."""
    images = [
        (f"ISIC_{k:07d}", 255 - image, mask)
        for k, (image, mask) in enumerate(_ellipses((203, 299), k) for k in range(3))
    ]
    run = _fake_run(tmp_path, images, _scripted_model(64, kernel=4.0 / 3, bias=-2.0), 64, fit="pad")
    evaluate_run(run, EvalSettings(at="input"), figures=False)
    for row in _rows(run):
        assert float(row["dice"]) == 1.0 and float(row["hd"]) == 0.0
    evaluate_run(run, figures=False)
    for row, (_, _, mask) in zip(_rows(run), images):
        assert int(row["truth_pixels"]) == mask.sum()
        assert float(row["dice"]) >= 0.99 and float(row["hd"]) <= 2.5  # an input pixel: 4.7 px


def test_inverted_and_empty_predictions_score_as_computed_by_hand(tmp_path):
    image, mask = _ellipses((64, 64), 0)
    inverted = _fake_run(tmp_path / "inv", [("a", image, mask)], _scripted_model(64, k=-4.0), 64)
    evaluate_run(inverted, figures=False)
    row = _rows(inverted)[0]
    g, p = mask.sum(), (~mask).sum()
    assert float(row["dice"]) == 0.0 and float(row["jaccard"]) == 0.0
    assert float(row["volume_similarity"]) == pytest.approx(1 - abs(p - g) / (p + g))
    assert float(row["sensitivity"]) == 0.0 and float(row["specificity"]) == 0.0
    empty = _fake_run(tmp_path / "empty", [("a", image, mask)], _scripted_model(64, [0, 0, 0], -10.0), 64)
    summary = evaluate_run(empty, figures=False)
    row = _rows(empty)[0]
    assert (float(row["dice"]), int(row["pred_pixels"]), row["empty_case"]) == (0.0, 0, "prediction_empty")
    assert float(row["hd"]) == pytest.approx(math.hypot(64, 64))  # the image diagonal
    assert summary["empty_cases"]["prediction_empty"] == 1


def test_shifted_prediction_costs_what_the_shift_says(tmp_path):
    """A w x h rectangle predicted s columns to the right: Dice 1 - s/w, HD s, and ITK's average
    Hausdorff s(s+1)/(2w) (s columns of h pixels at distances 1..s, over w*h pixels, both ways)."""
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True  # h = w = 20
    # white on black here: the shifting convolution's zero padding must read as background
    image = np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    s, w = 3, 20
    model = _scripted_model(64, kernel=4 / 3, bias=-2.0, shift=s)
    run = _fake_run(tmp_path, [("a", image, mask)], model, 64)
    evaluate_run(run, EvalSettings(at="input"), figures=False)
    row = _rows(run)[0]
    assert float(row["dice"]) == pytest.approx(1 - s / w)
    assert float(row["hd"]) == pytest.approx(s)
    assert float(row["avg_hausdorff"]) == pytest.approx(s * (s + 1) / (2 * w))
    evaluate_run(run, EvalSettings(at="input", spacing="0.5"), figures=False)
    assert float(_rows(run)[0]["hd"]) == pytest.approx(s * 0.5)


def test_scoring_training_images_is_refused_unless_allowed(runs, caplog):
    """An images/masks folder pair has no test split: scoring the training data must be refused."""
    from skinseg.evaluation.score_run import EvaluationError

    run = os.path.join(runs, "baseline")
    data = json.load(open(os.path.join(run, "split.json")))["data"]
    training = EvalSettings(
        data=(os.path.join(data, "training", "image"), os.path.join(data, "training", "label"))
    )
    from skinseg.evaluation.external import evaluate_models

    with pytest.raises(
        EvaluationError, match=r"the run trained or selected its model on this image \(12 of the 12"
    ):
        evaluate_models([run], training, runs_dir=runs, figures=False)
    caplog.set_level("WARNING")
    folder, summary = evaluate_models([run], training, runs_dir=runs, figures=False, allow_overlap=True)
    assert "scoring 12 image(s) the run(s) baseline trained on (--allow-overlap)" in caplog.text
    assert summary["training_overlap"] == 12 and folder.path.startswith(os.path.join(runs, "external"))
    with pytest.raises(EvaluationError, match="scores the run's own test split"):
        evaluate_run(run, training, figures=False)  # never into the run's own eval/


def test_two_data_sets_are_split_and_scored_each_on_its_own(tmp_path):
    from skinseg.cli import train
    from tests.conftest import TINY_TRAIN_ARGS, write_pairs

    sources = []
    for k, name in enumerate(("a", "b")):
        root = tmp_path / name
        for split, count, start in (("training", 8, 100 * k), ("testing", 2, 100 * k + 50)):
            ids = [f"{name.upper()}_{i:03d}" for i in range(start, start + count)]
            write_pairs(root / split / "image", root / split / "label", ids, start=start)
        sources += ["--data", str(root)]
    out = tmp_path / "runs" / "both"
    assert train.main([*TINY_TRAIN_ARGS, *sources, "--out", str(out)]) == 0
    record = json.load(open(out / "split.json"))
    assert [s["counts"] for s in record["sources"]] == [{"train": 6, "validation": 2, "test": 2}] * 2
    summary = evaluate_run(str(out), figures=False)
    assert summary["n"] == 4
    assert sorted(summary["by_source"]) == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert all(s["n"] == 2 for s in summary["by_source"].values())
    assert {row["source"] for row in _rows(str(out))} == {str(tmp_path / "a"), str(tmp_path / "b")}
    assert evaluate.main(["--all", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "## Per data set" in open(tmp_path / "runs" / "results.md").read()


def test_post_processing_is_chosen_on_validation_and_used_by_evaluation_and_prediction(runs, tmp_path):
    from skinseg.cli import predict
    from skinseg.core.run_folder import RunFolder, file_digest
    from skinseg.data_pipeline.split import read_split
    from skinseg.evaluation.score_run import evaluation_is_current
    from skinseg.inference.postprocess import PostProcessing, read_chosen, write_chosen

    run = RunFolder(os.path.join(runs, "baseline"))
    record = json.load(open(run.postprocess_path))  # chosen when training ended
    assert record["chosen_on"]["images"] == len(read_split(run.split_path)["validation"]) > 0
    assert record["network_sha256"] == file_digest(run.best_network)
    # A recognisable choice: nothing is above 1.0, so every mask is empty.
    write_chosen(run, PostProcessing(threshold=1.0))
    summary = evaluate_run(run, figures=False)
    assert summary["postprocess"]["threshold"] == 1.0
    assert all(int(r["pred_pixels"]) == 0 for r in _rows(run.path))
    images = os.path.join(os.path.dirname(runs), "data", "testing", "image")
    assert predict.main(["--model", run.path, images, "--out", str(tmp_path / "m")]) == 0
    masks = [
        np.array(Image.open(tmp_path / "m" / name))
        for name in os.listdir(tmp_path / "m")
        if name.endswith(".png")
    ]
    assert masks and all(m.max() == 0 for m in masks)
    assert (
        predict.main(["--model", run.path, images, "--out", str(tmp_path / "t"), "--threshold", "0.01"]) == 0
    )
    assert (
        predict.main(["--model", run.path, images, "--out", str(tmp_path / "h"), "--threshold", "0.5"]) == 0
    )
    names = sorted(n for n in os.listdir(tmp_path / "t") if n.endswith(".png"))
    low = [np.array(Image.open(tmp_path / "t" / n)) > 0 for n in names]
    half = [np.array(Image.open(tmp_path / "h" / n)) > 0 for n in names]
    assert len(names) == 6 and all((h <= lo).all() for h, lo in zip(half, low))  # a lower threshold: more
    assert sum(lo.sum() for lo in low) > sum(h.sum() for h in half)
    fixed = evaluate_run(run, EvalSettings(threshold=0.5), figures=False)  # an explicit threshold wins
    assert fixed["postprocess"]["threshold"] == 0.5 and fixed["settings"]["threshold"] == 0.5
    # A record made for another network is not used: evaluation chooses again.
    record = json.load(open(run.postprocess_path))
    json.dump({**record, "network_sha256": "0" * 64}, open(run.postprocess_path, "w"))
    assert read_chosen(run) is None
    again = evaluate_run(run, figures=False)
    assert again["postprocess"]["chosen_on"]["images"] > 0
    assert read_chosen(run) is not None
    assert evaluation_is_current(run, again["settings"])
    # A damaged record is derived data: ignored with a warning, chosen again, replaced.
    with open(run.postprocess_path, "w") as handle:
        handle.write('{"threshold": "high"')
    assert read_chosen(run) is None
    assert not evaluation_is_current(run, again["settings"])  # scored with a choice no longer on disk
    assert evaluate_run(run, figures=False)["postprocess"]["chosen_on"]["images"] > 0
    assert read_chosen(run) is not None


def test_seeds_train_repeats_and_the_table_gives_their_mean_and_sd(tmp_path):
    from skinseg.cli import train
    from tests.conftest import TINY_TRAIN_ARGS, make_simple

    data = make_simple(tmp_path / "data", n_train=10, n_test=4)
    runs_dir = tmp_path / "runs"
    base = str(runs_dir / "tiny")
    assert train.main([*TINY_TRAIN_ARGS, "--data", data, "--out", base, "--seeds", "2"]) == 0
    assert sorted(os.listdir(runs_dir)) == ["tiny-s0", "tiny-s1"]
    assert [json.load(open(runs_dir / n / "config.json"))["seed"] for n in ("tiny-s0", "tiny-s1")] == [0, 1]
    assert train.main([*TINY_TRAIN_ARGS, "--data", data, "--out", str(runs_dir / "other"), "--aug"]) == 0
    assert evaluate.main(["--all", "--runs-dir", str(runs_dir), "--baseline", "other"]) == 0
    table = open(runs_dir / "results.md").read()
    section = table.split("## Rows over repeated training runs")[1]
    row = next(line for line in section.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    dice = [
        float(json.load(open(runs_dir / n / "eval" / "summary.json"))["metrics"]["dice"]["mean"])
        for n in ("tiny-s0", "tiny-s1")
    ]
    assert cells[1] == "2"
    mean, sd = (float(x) for x in cells[2].split(" ± "))
    assert mean == pytest.approx(np.mean(dice), abs=5e-5)
    assert sd == pytest.approx(np.std(dice, ddof=1), abs=5e-5)
    assert any(line.startswith("| other | 1 |") for line in section.splitlines())


def test_repeat_groups_keep_different_configurations_apart(tmp_path):
    from skinseg.core.run_folder import RunFolder
    from skinseg.evaluation.compare_runs import repeat_groups

    runs = []
    for name, config in {
        "tiny-s0": RunConfig(seed=0, width=4),
        "tiny-s1": RunConfig(seed=1, width=4),
        "tiny": RunConfig(width=8),  # same stem, another configuration
        "long-s0": RunConfig(seed=0, width=4, epochs=99),  # differs only in length: not a repeat
    }.items():
        (tmp_path / name).mkdir()
        config.save(RunFolder(tmp_path / name).config_path)
        runs.append(RunFolder(tmp_path / name))
    results = [{"name": run.name} for run in runs]
    groups = repeat_groups(results, runs)
    assert sorted(len(g) for g in groups.values()) == [1, 1, 2]
    assert [r["name"] for r in groups["tiny"]] == ["tiny-s0", "tiny-s1"]
    assert [r["name"] for r in groups["tiny'"]] == ["tiny"] and "long" in groups


@pytest.mark.parametrize(
    "data", [["--data", "A", "--data", "B"], ["--data", "IMAGES", "MASKS", "EXTRA"]], ids=["twice", "three"]
)
def test_data_names_one_test_set_and_more_is_refused_not_dropped(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--run", str(tmp_path), *data])
    assert stop.value.code == 2
    assert "one test set per call" in capsys.readouterr().err
