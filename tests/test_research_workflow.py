"""From trained runs to a publishable table: sections per test set (by content), any model or
another tool's masks on any labelled set without touching a run's own scores, saved
probabilities, ensembles, cross-validation and fine-tuning."""

from __future__ import annotations

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest

from skinseg.cli import evaluate, predict, train
from skinseg.data_pipeline.checks import PairInfo
from skinseg.data_pipeline.discovery import Pair
from skinseg.data_pipeline.image_io import read_image, write_image
from skinseg.data_pipeline.split import assign_folds
from skinseg.evaluation.score_run import evaluate_run
from skinseg.inference.segmenter import PredictError, Segmenter
from skinseg.models.registry import build_model
from skinseg.training.config import ConfigError, RunConfig, default_run_name
from skinseg.training.init_from import load_initial_weights, record
from skinseg.training.run import run_training
from tests.conftest import EXPORTED, TINY_RUN, make_simple, write_pairs

pytestmark = pytest.mark.integration  # trains models or starts processes


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two labelled sets (A, B) and, in one runs folder, a run on each and a 2-fold CV on A."""
    base = tmp_path_factory.mktemp("lab")
    a = make_simple(base / "setA", n_train=12, n_test=5)
    b = str(base / "setB")  # another clinic: other images, other IDs
    for split, ids, start in (("training", range(10), 0), ("testing", range(10, 14), 10)):
        write_pairs(
            os.path.join(b, split, "image"),
            os.path.join(b, split, "label"),
            [f"CLIN_{i:04d}" for i in ids],
            size=(40, 56),
            seed=7,
            start=start,
        )
    runs = base / "runs"
    run_training(RunConfig(data=a, out=str(runs / "on-a"), **TINY_RUN), verbose=0)
    run_training(RunConfig(data=b, out=str(runs / "on-b"), seed=1, **TINY_RUN), verbose=0)
    for fold in (0, 1):
        run_training(
            RunConfig(data=a, out=str(runs / f"cv-f{fold}"), folds=2, fold=fold, **TINY_RUN), verbose=0
        )
    return {"a": a, "b": b, "runs": str(runs), "base": base}


def _sections(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("## Test set")]


def test_all_groups_the_table_by_test_set_with_csv_latex_and_figures(lab):
    runs = lab["runs"]
    assert evaluate.main(["--all", "--runs-dir", runs]) == 0
    table = open(os.path.join(runs, "results.md"), encoding="utf-8").read()
    sections = _sections(table)
    assert len(sections) == 2, table  # set A (5 images) and set B (4): never one ranking
    assert "setA (5 images" in sections[0] and "setB (4 images" in sections[1]
    first, second = table.split(sections[1])
    assert "| on-a |" in first and "| on-b |" not in first
    assert "| on-b |" in second
    # one run per section: nothing to rank, so nothing bold and no p-value
    assert "**" not in first.split(sections[0])[1]
    assert "## Cross-validation (out of fold)" in table and "| cv | 2 of 2 | setA |" in table
    rows = list(csv.DictReader(open(os.path.join(runs, "results.csv"), encoding="utf-8")))
    assert {(r["run"], r["test_set"], r["n"]) for r in rows} == {("on-a", "setA", "5"), ("on-b", "setB", "4")}
    dice = json.load(open(os.path.join(runs, "on-a", "eval", "summary.json")))["metrics"]["dice"]["mean"]
    assert float(next(r for r in rows if r["run"] == "on-a")["dice"]) == pytest.approx(dice)
    tex = open(os.path.join(runs, "results.tex"), encoding="utf-8").read()
    assert tex.count("\\begin{tabular}") == 2 and "setA ($n = 5$ images)" in tex
    for suffix in ("png", "pdf", "svg"):
        assert os.path.getsize(os.path.join(runs, f"dice_boxplot-1.{suffix}")) > 1000
    from PIL import Image

    with Image.open(os.path.join(runs, "dice_boxplot-1.png")) as image:
        assert round(image.info["dpi"][0]) == 300


def test_the_same_images_from_another_folder_share_a_section(lab, tmp_path):
    copy = tmp_path / "copyA"
    shutil.copytree(lab["a"], copy)
    runs = tmp_path / "runs"
    shutil.copytree(os.path.join(lab["runs"], "on-a"), runs / "on-a")
    assert (
        evaluate.main(
            ["--model", str(runs / "on-a"), "--data", str(copy), "--runs-dir", str(runs), "--allow-overlap"]
        )
        == 0
    )
    assert evaluate.main(["--all", "--runs-dir", str(runs)]) == 0
    table = open(runs / "results.md", encoding="utf-8").read()
    assert len(_sections(table)) == 1  # identified by content, not path
    assert "| on-a (external) |" in table


def test_scoring_a_run_elsewhere_keeps_its_own_scores(lab, capsys):
    runs = lab["runs"]
    own = os.path.join(runs, "on-a", "eval", "summary.json")
    evaluate_run(os.path.join(runs, "on-a"), figures=False)
    before = open(own, "rb").read()
    assert evaluate.main(["--run", os.path.join(runs, "on-a"), "--data", lab["b"], "--save-probs"]) == 0
    assert open(own, "rb").read() == before  # the run's 5-image evaluation is intact
    external = [d for d in os.listdir(os.path.join(runs, "external")) if d.startswith("on-a--")]
    assert len(external) == 1
    folder = os.path.join(runs, "external", external[0])
    summary = json.load(open(os.path.join(folder, "summary.json")))
    assert summary["n"] == 4 and summary["test_set"]["name"] == "setB" and summary["trained_on"] == "setA"
    # --save-probs: each test image's probabilities at its original size, as the Segmenter gives them
    segmenter = Segmenter.from_run(os.path.join(runs, "on-a"))
    image = sorted(os.listdir(os.path.join(lab["b"], "testing", "image")))[0]
    stored = np.load(os.path.join(folder, "probabilities", os.path.splitext(image)[0] + ".npz"))[
        "probability"
    ]
    _, expected = segmenter.segment(os.path.join(lab["b"], "testing", "image", image), probabilities=True)
    assert stored.shape == expected.shape == (40, 56)
    np.testing.assert_allclose(stored.astype(np.float32), expected, atol=1e-3)
    assert evaluate.main(["--all", "--runs-dir", runs]) == 0
    table = open(os.path.join(runs, "results.md"), encoding="utf-8").read()
    section_b = table.split(_sections(table)[1])[1].split("##")[0]
    assert "| on-a (external) | setA |" in section_b and "| on-b | setB |" in section_b
    capsys.readouterr()


def test_another_tools_masks_are_scored_like_the_models_own(lab, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(os.path.join(lab["runs"], "on-b"), runs / "on-b")
    own = evaluate_run(str(runs / "on-b"), figures=False)
    masks = tmp_path / "masks"
    images = os.path.join(lab["b"], "testing", "image")
    assert predict.main(["--model", str(runs / "on-b"), images, "--out", str(masks)]) == 0
    assert evaluate.main(["--predictions", str(masks), "--data", lab["b"], "--runs-dir", str(runs)]) == 0
    [name] = os.listdir(runs / "external")
    scored = json.load(open(runs / "external" / name / "summary.json"))
    assert scored["kind"] == "predictions" and scored["n"] == own["n"]
    assert scored["metrics"]["dice"]["mean"] == pytest.approx(own["metrics"]["dice"]["mean"], abs=1e-9)
    # a missing mask, and a mask of the wrong size, are refused naming the file
    first = sorted(name for name in os.listdir(masks) if name.endswith(".png"))[0]
    os.rename(masks / first, tmp_path / first)
    assert evaluate.main(["--predictions", str(masks), "--data", lab["b"], "--runs-dir", str(runs)]) == 2
    write_image(str(masks / first), np.zeros((10, 10), np.uint8))
    assert evaluate.main(["--predictions", str(masks), "--data", lab["b"], "--runs-dir", str(runs)]) == 2


def test_an_ensemble_averages_its_members_probabilities(lab):
    runs = lab["runs"]
    one, two = (Segmenter.from_run(os.path.join(runs, f"cv-f{k}")) for k in (0, 1))
    both = Segmenter.ensemble([one, two], tta=True)
    image = read_image(os.path.join(lab["a"], "testing", "image", "ISIC_0000012.jpg")).array
    expected = (
        one.with_options(tta=True).predict(image).at_input
        + two.with_options(tta=True).predict(image).at_input
    ) / 2
    np.testing.assert_allclose(both.predict(image).at_input, expected, atol=1e-6)
    assert both.parameters == one.parameters + two.parameters
    assert both.post.threshold == 0.5
    other = Segmenter(build_model("baseline", 48, width=4, depth=2))
    with pytest.raises(PredictError, match="same input"):
        Segmenter.ensemble([one, other])


def test_an_ensemble_exports_as_one_model_that_predicts_what_the_ensemble_predicts(lab, tmp_path, capsys):
    """predict.py --model A --model B --export DIR: one SavedModel, TFLite and Keras file averaging
    the members; DIR/model.keras as --model writes the masks the two --model options write, and
    the SavedModel gives the ensemble's probabilities."""
    import tensorflow as tf

    runs, images = lab["runs"], os.path.join(lab["a"], "testing", "image")
    members = ["--model", os.path.join(runs, "cv-f0"), "--model", os.path.join(runs, "cv-f1")]
    out = tmp_path / "ens"
    assert predict.main([*members, "--export", str(out)]) == 0
    assert "model.keras" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == sorted([*EXPORTED, "trained_on.json"])
    assert json.load(open(out / "postprocess.json"))["threshold"] == 0.5  # an ensemble's mask step
    assert predict.main([*members, images, "--out", str(tmp_path / "two")]) == 0
    assert predict.main(["--model", str(out / "model.keras"), images, "--out", str(tmp_path / "one")]) == 0
    names = sorted(n for n in os.listdir(tmp_path / "two") if n.endswith(".png"))
    assert len(names) == 5
    for name in names:
        np.testing.assert_array_equal(
            read_image(str(tmp_path / "one" / name)).array, read_image(str(tmp_path / "two" / name)).array
        )
    ensemble = Segmenter.load_ensemble([os.path.join(runs, "cv-f0"), os.path.join(runs, "cv-f1")])
    image = read_image(os.path.join(images, "ISIC_0000012.jpg")).array
    expected = ensemble.predict(image).at_input
    single = Segmenter.from_file(str(out / "model.keras"))
    np.testing.assert_allclose(single.predict(image).at_input, expected, atol=2e-5)
    served = tf.saved_model.load(str(out / "saved_model"))
    x = ensemble.prepare(image)[None].astype("float32") / 255.0
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy()[0, ..., 0], expected, atol=2e-5)

    # trained_on.json keeps what the members trained on: the export cannot be scored on those images
    leak = tmp_path / "leak"
    for kind in ("image", "label"):
        shutil.copytree(os.path.join(lab["a"], "training", kind), leak / "testing" / kind)
    capsys.readouterr()
    scored = ["--model", str(out / "model.keras"), "--runs-dir", str(tmp_path / "runs")]
    assert evaluate.main([*scored, "--data", str(leak)]) == 2
    assert "the ensemble's run cv-f" in capsys.readouterr().err
    assert evaluate.main([*scored, "--data", lab["b"]]) == 0
    (summary,) = [
        os.path.join(root, name)
        for root, _, names in os.walk(tmp_path / "runs")
        for name in names
        if name == "summary.json"
    ]
    assert json.load(open(summary))["trained_on"] == "the data of cv-f0 + cv-f1 (trained_on.json)"


def test_folds_partition_the_pool_stratified_by_lesion_size(lab):
    records = [json.load(open(os.path.join(lab["runs"], f"cv-f{k}", "split.json"))) for k in (0, 1)]
    tests = [{row["id"] for row in r["test"]} for r in records]
    assert not tests[0] & tests[1] and len(tests[0] | tests[1]) == 12  # every training image once
    for r, held in zip(records, tests):
        trained = {row["id"] for row in r["train"] + r["validation"]}
        assert not trained & held and r["cv"]["folds"] == 2
    # stratified: sorted by lesion size, each block of K is spread over the K folds
    infos = [
        PairInfo(Pair(f"i{k}", "", ""), (1, 1), fraction, "")
        for k, fraction in enumerate(np.linspace(0, 0.9, 10))
    ]
    folds = assign_folds(infos, 5)
    for start in range(0, 10, 5):
        assert sorted(folds[f"i{k}"] for k in range(start, start + 5)) == [0, 1, 2, 3, 4]
    assert assign_folds(list(reversed(infos)), 5) == folds  # whatever the order


def test_fine_tuning_starts_from_the_source_weights_and_refuses_a_misfit(lab, tmp_path):
    source = os.path.join(lab["runs"], "on-a")
    config = RunConfig(
        data=lab["b"],
        out=str(tmp_path / "ft"),
        init_from=source,
        epochs=1,
        **{k: v for k, v in TINY_RUN.items() if k != "epochs"},
    )
    network = build_model("baseline", 32, width=4, depth=2)
    load_initial_weights(network, record(source))
    trained = keras.models.load_model(os.path.join(source, "best.keras"), compile=False)
    for mine, theirs in zip(network.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    run_training(config, verbose=0)
    recorded = json.load(open(tmp_path / "ft" / "config.json"))
    assert recorded["init_source"]["sha256"] == record(source)["sha256"]
    with pytest.raises(ConfigError, match="does not fit"):
        load_initial_weights(build_model("baseline", 32, width=8, depth=2), record(source))


def test_train_cli_takes_the_sources_architecture_a_config_file_and_checks_every_folder_first(
    lab, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    options = {
        "model": "baseline",
        "width": 4,
        "depth": 2,
        "image_size": 32,
        "epochs": 1,
        "batch_size": 4,
        "lr": 0.002,
    }
    (tmp_path / "run.json").write_text(json.dumps(options))
    source = os.path.join(lab["runs"], "on-a")
    # architecture from the source's config.json; --config's lr; the typed --epochs wins
    assert (
        train.main(
            [
                "--init-from",
                source,
                "--data",
                lab["b"],
                "--config",
                "run.json",
                "--epochs",
                "1",
                "--verbose",
                "0",
                "--out",
                "ft",
            ]
        )
        == 0
    )
    config = RunConfig.load(str(tmp_path / "ft" / "config.json"))
    assert (config.width, config.depth, config.image_size, config.lr) == (4, 2, 32, 0.002)
    (tmp_path / "bad.json").write_text(json.dumps({"widht": 4}))
    assert train.main(["--config", "bad.json"]) == 2
    # --seeds 2 with OUT-s1 taken: refused before seed 0 trains
    os.makedirs(tmp_path / "x-s1")
    shutil.copytree(tmp_path / "ft", tmp_path / "x-s1", dirs_exist_ok=True)
    assert train.main(
        ["--config", "run.json", "--data", lab["b"], "--seeds", "2", "--out", "x", "--verbose", "0"]
    ) == 2 and not os.path.exists(tmp_path / "x-s0")


def test_predict_refuses_to_mix_masks_of_other_options(lab, tmp_path):
    run = os.path.join(lab["runs"], "on-b")
    images = os.path.join(lab["b"], "testing", "image")
    out = str(tmp_path / "masks")
    assert predict.main(["--model", run, images, "--out", out]) == 0
    assert predict.main(["--model", run, images, "--out", out]) == 0  # same options: kept masks are fine
    assert predict.main(["--model", run, images, "--out", out, "--tta"]) == 2
    assert predict.main(["--model", run, images, "--out", out, "--tta", "--overwrite"]) == 0
    assert json.load(open(os.path.join(out, ".skinseg-predict.json")))["tta"] is True


def test_default_run_names_include_the_data_set():
    assert default_run_name(RunConfig()) == "baseline-synthetic"
    assert default_run_name(RunConfig(data="/data/ISIC2018")) == "baseline-ISIC2018"
    assert default_run_name(RunConfig(data=("/x/clinic/images", "/x/clinic/masks"))) == "baseline-clinic"
    assert (
        default_run_name(RunConfig(data=("/x/extra/training/image", "/x/extra/training/label")))
        == "baseline-extra"
    )
    assert default_run_name(RunConfig(folds=5, fold=2)) == "baseline-synthetic-cv5-f2"
    # --fold I trains into the folder the whole --folds K run gives fold I
    whole = train.repeats(RunConfig(folds=3, out="x"), 1)
    assert [c.out for c in whole] == ["x-f0", "x-f1", "x-f2"]
    assert train.repeats(RunConfig(folds=3, fold=1, out="x"), 1)[0].out == "x-f1"
    assert [c.out for c in train.repeats(RunConfig(folds=3, fold=1), 2)] == [
        os.path.join("runs", "baseline-synthetic-cv3-f1-s0"),
        os.path.join("runs", "baseline-synthetic-cv3-f1-s1"),
    ]


def test_tensorboard_without_the_package_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        run_training(RunConfig(out=str(tmp_path / "tb"), tensorboard=True, **TINY_RUN), verbose=0)
    assert not os.path.exists(tmp_path / "tb")
