"""The command lines: help texts and errors at the edge (no tracebacks, exit code 2)."""

import pytest

import train
from tests.conftest import TINY_TRAIN_ARGS

OPTIONS = [
    "--model",
    "--data",
    "--image-size",
    "--epochs",
    "--batch-size",
    "--lr",
    "--optimizer",
    "--loss",
    "--aug",
    "--clahe",
    "--flooding",
    "--lr-schedule",
    "--val-fraction",
    "--seed",
    "--mixed-precision",
    "--width",
    "--depth",
    "--max-filters",
    "--backbone-weights",
    "--strategy",
    "--out",
    "--resume",
    "--overwrite",
    "--deterministic",
    "--cache",
    "--skip-bad",
]


def test_train_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        train.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert option in text, option
    for default in (
        "(default: baseline)",
        "(default: 128)",
        "(default: 50)",
        "(default: bce, as the reference)",
        "(default: 0.1)",
        "(default: auto)",
        "(default: 1024)",
    ):
        assert default in text, default


def test_unknown_model_lists_the_valid_names(capsys):
    assert train.main(["--model", "segformer"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'segformer'" in err and "slightly_bigger_deeper" in err and "Traceback" not in err


def test_missing_data_folder_and_bad_values(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err
    assert train.main(["--val-fraction", "1.5", "--out", str(tmp_path / "run2")]) == 2
    assert "val_fraction" in capsys.readouterr().err
    assert train.main(["--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


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
    code = train.main(args)
    assert code == 2 and "TF_CONFIG" in capsys.readouterr().err
