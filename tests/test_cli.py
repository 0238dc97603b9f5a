"""The command lines: options declared once, mistakes caught before anything is written, quiet and
useful output. Every mistake asserts its message and its exit code."""

import json
import os
import subprocess
import sys

import pytest

from skinseg.cli import predict, train
from skinseg.core.run_folder import RunFolder
from skinseg.training.config import ConfigError, RunConfig
from tests.conftest import ROOT, TINY_TRAIN_ARGS


def _train_help(capsys) -> str:
    with pytest.raises(SystemExit) as done:
        train.main(["--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_config_field_is_an_option_in_its_group_with_its_default(capsys):
    from dataclasses import fields

    text = _train_help(capsys)
    for f in fields(RunConfig):
        if f.metadata.get("cli") is not False:
            assert "--" + f.name.replace("_", "-") in text, f.name
    for group in ("data options", "model options", "optimisation options", "run options"):
        assert group in text
    for default in (
        "(default: baseline)",
        "(default: 128)",
        "(default: 50)",
        "(default: bce)",
        "(default: auto)",
    ):
        assert default in text, default
    assert "slightly_bigger_deeper" in text  # the model names, from the registry


def test_help_and_a_misspelt_flag_do_not_import_tensorflow():
    script = (
        "import sys, contextlib, io\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from skinseg.cli.train import main\n"
        "for argv in (['--help'], ['--epoch', '3'], ['--epohcs', '3']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as done:\n"
        "            print(argv[0], done.code, file=sys.__stdout__)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert out.split("\n")[:4] == ["--help 0", "--epoch 2", "--epohcs 2", "False False"]


def test_unknown_model_lists_the_valid_names(capsys):
    assert train.main(["--model", "segformer"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'segformer'" in err and "slightly_bigger_deeper" in err and "Traceback" not in err


def test_a_misspelt_monitor_is_refused_before_training(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        train.main(["--monitor", "val_dcie", "--out", str(tmp_path / "run")])
    assert done.value.code == 2
    assert "invalid choice: 'val_dcie'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_values_and_a_missing_data_folder_leave_no_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(["--data", str(tmp_path / "nowhere"), "--out", str(run)]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    assert not run.exists()  # the corrected command can use the same --out
    assert train.main(["--val-fraction", "1.5", "--out", str(run)]) == 2
    assert "val_fraction must be in [0, 1)" in capsys.readouterr().err
    assert train.main(["--elastic", "2", "--out", str(run)]) == 2
    assert "elastic must be a probability" in capsys.readouterr().err
    for option, value, message in (
        ("--step-factor", "-1", "step_factor must be positive"),  # was: lr -0.001 after 30 epochs
        ("--seed", "-1", "seed must be >= 0"),
        ("--image-size", "100000", "image_size must be at most 4096"),
        ("--epsilon", "0", "epsilon must be positive"),
        ("--max-filters", "-3", "max_filters must be auto, none or at least 1"),
    ):
        assert train.main([option, value, "--out", str(run)]) == 2
        assert message in capsys.readouterr().err, option
    assert train.main(["--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert not run.exists()


def test_config_json_with_an_unknown_key_or_a_bad_value_names_the_file_and_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**RunConfig().to_json(), "modle": "deeper"}))
    with pytest.raises(ConfigError, match=r"config\.json: unknown key\(s\) modle"):
        RunConfig.load(str(path))
    path.write_text(json.dumps({**RunConfig().to_json(), "image_size": "big"}))
    with pytest.raises(ConfigError, match=r"config\.json: image_size = 'big' is not a valid value"):
        RunConfig.load(str(path))
    path.write_text("{ not json")
    with pytest.raises(ConfigError, match=r"config\.json: unreadable"):
        RunConfig.load(str(path))


def test_config_round_trips_through_json():
    config = RunConfig(data=("/a", "/b"), max_filters=None, aug=True, width=8, lr=3e-4)
    assert RunConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert RunConfig(data="/x").data == (("/x",),)


def test_a_recipe_sets_defaults_and_typed_options_win():
    from skinseg.training.config import config_from_args
    from skinseg.training.recipes import RECIPES

    argv = ["--recipe", "best", "--width", "16", "--epochs", "3"]
    args = train.build_parser().parse_args(argv)
    config = config_from_args(args, set(vars(train.build_parser(True).parse_args(argv))))
    assert (config.recipe, config.width, config.epochs) == ("best", 16, 3)  # typed
    for key in ("loss", "aug", "aug_policy", "color_constancy", "lr_schedule", "batch_size"):
        assert getattr(config, key) == RECIPES["best"][key]
    assert config.aug_policy == "dermoscopy"  # the policy that won over three seeds (recipes.py)
    plain = config_from_args(train.build_parser().parse_args([]), set())
    assert (plain.loss, plain.aug, plain.recipe) == ("bce", False, "none")
    assert "recipe" not in config.recorded()  # its values are; resuming compares those


def test_seeds_make_one_configuration_per_seed_in_its_own_folder():
    configs = train.repeats(RunConfig(out="runs/x", seed=5), 3)
    assert [(c.seed, c.out) for c in configs] == [(5, "runs/x-s5"), (6, "runs/x-s6"), (7, "runs/x-s7")]
    assert [c.out for c in train.repeats(RunConfig(aug=True), 2)] == [
        os.path.join("runs", "baseline-aug-synthetic-s0"),
        os.path.join("runs", "baseline-aug-synthetic-s1"),
    ]
    assert train.repeats(RunConfig(out="runs/x"), 1)[0].out == "runs/x"
    assert train.repeats(RunConfig(out="runs/x/"), 2)[0].out == os.path.join("runs", "x-s0")


def test_boolean_options_can_be_turned_off_after_a_recipe():
    from skinseg.training.config import config_from_args

    def config(*argv):
        args = train.build_parser().parse_args(list(argv))
        return config_from_args(args, set(vars(train.build_parser(True).parse_args(list(argv)))))

    off = config("--recipe", "best", "--no-aug")
    # the recipe's augmentation policy goes with its augmentation (a policy without --aug is refused)
    assert off.aug is False and off.aug_policy == "default" and off.color_constancy is True
    assert config("--recipe", "best", "--aug-policy", "strong").aug_policy == "strong"  # typed wins
    with pytest.raises(ValueError, match="--aug-policy dermoscopy needs --aug"):
        config("--recipe", "best", "--no-aug", "--aug-policy", "dermoscopy")


def test_seeds_with_resume_is_refused(capsys):
    assert train.main(["--out", "runs/x", "--resume", "--seeds", "2"]) == 2
    assert "--resume continues one run" in capsys.readouterr().err


def test_multiworker_without_tf_config_is_a_clear_error(simple_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = [
        *TINY_TRAIN_ARGS,
        "--data",
        simple_dataset,
        "--strategy",
        "multiworker",
        "--out",
        str(tmp_path / "r"),
    ]
    assert train.main(args) == 2
    assert "TF_CONFIG" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from tests.conftest import make_simple

    base = tmp_path_factory.mktemp("finished")
    data = make_simple(base / "data", n_train=8, n_test=2)
    out = str(base / "run")
    args = [*TINY_TRAIN_ARGS, "--epochs", "2", "--data", data, "--out", out]
    assert train.main(args) == 0
    return out, data


@pytest.mark.integration
def test_resume_extends_with_epochs_and_reports_every_option_it_ignores(finished_run, caplog):
    out, _ = finished_run
    caplog.set_level("INFO")
    assert (
        train.main(["--out", out, "--resume", "--epochs", "3", "--lr", "0.5", "--aug", "--verbose", "0"]) == 0
    )
    text = caplog.text
    assert "ignoring --lr 0.5: a resumed run keeps its configuration (lr = 0.001)" in text
    assert "ignoring --aug True" in text
    assert "extending the run from 2 to 3 epochs" in text
    assert [r["epoch"] for r in RunFolder(out).read_history()] == [1, 2, 3]
    assert RunConfig.load(RunFolder(out).config_path).epochs == 3
    caplog.clear()
    assert train.main(["--out", out, "--resume", "--verbose", "0"]) == 0
    assert "all 3 epochs are already done" in caplog.text and "--resume --epochs N extends" in caplog.text


@pytest.mark.integration
def test_predict_takes_a_run_folder(finished_run, tmp_path, capsys):
    out, data = finished_run
    images = os.path.join(data, "testing", "image")
    assert predict.main(["--model", out, images, "--out", str(tmp_path / "masks")]) == 0
    assert len([n for n in os.listdir(tmp_path / "masks") if n.endswith(".png")]) == 2
    assert predict.main(["--model", str(tmp_path), images, "--out", str(tmp_path / "m2")]) == 2
    assert "not a run folder of train.py" in capsys.readouterr().err


@pytest.mark.integration
def test_a_cpu_user_sees_where_it_runs_and_one_line_per_epoch_when_piped(simple_dataset, tmp_path):
    """No TensorFlow/CUDA start-up lines; the run folder first; each epoch once."""
    args = [sys.executable, "train.py", *TINY_TRAIN_ARGS, "--epochs", "2", "--data", simple_dataset]
    args = [a for a in args if a not in ("--verbose", "0")]
    done = subprocess.run(
        [*args, "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    for noise in ("cuInit", "oneDNN", "absl", "cuda drivers", "cpu_feature_guard", "rebuild TensorFlow"):
        assert noise not in done.stderr, noise
    assert lines[0].startswith("TensorFlow ") and "on the CPU" in lines[0]
    assert lines[1] == f"run folder: {tmp_path / 'run'}"
    assert sum(line.startswith("epoch 1/2") for line in lines) == 1
    assert sum(line.startswith("epoch 2/2") for line in lines) == 1


def test_no_aug_drops_the_augmentation_policy_of_a_config_file_too(tmp_path):
    """A run of today's recipe records aug_policy dermoscopy; reusing its config.json with --no-aug
    must not be refused for a policy without augmentation."""
    from skinseg.training.config import config_from_args

    path = tmp_path / "config.json"
    path.write_text(json.dumps(RunConfig(aug=True, aug_policy="dermoscopy", width=8).to_json()))

    def config(*argv):
        args = train.build_parser().parse_args(list(argv))
        typed = set(vars(train.build_parser(True).parse_args(list(argv))))
        return config_from_args(args, typed | train._from_file(args, typed))

    assert (config("--config", str(path)).aug_policy, config("--config", str(path)).width) == (
        "dermoscopy",
        8,
    )
    off = config("--config", str(path), "--no-aug")
    assert (off.aug, off.aug_policy, off.width) == (False, "default", 8)
    assert config("--config", str(path), "--aug-policy", "strong").aug_policy == "strong"
