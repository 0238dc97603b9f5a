import json
import os
from types import SimpleNamespace

from bench.pretrained import _repeats, card
from skinseg.inference.description import PRETRAINED


def _summary():
    with open(os.path.join(os.path.dirname(PRETRAINED), "postprocess.json"), encoding="utf-8") as handle:
        post = json.load(handle)
    metric = lambda mean: {"mean": mean, "ci95": [mean - 0.01, mean + 0.01]}  # noqa: E731
    names = ("jaccard", "threshold_jaccard", "hd95", "hd", "avg_hausdorff")
    return {
        "params": 1234,
        "best_epoch": 12,
        "postprocess": post,
        "metrics": {"dice": metric(0.925), **{name: metric(0.5) for name in names}},
    }


def _card(repeats, policy="dermoscopy"):
    config = SimpleNamespace(width=16, image_size=128, epochs=15, aug_policy=policy)
    row = {"size_mb": 8.3, "train_min": 26}
    return card(
        config,
        _summary(),
        row,
        "train.py --recipe best",
        {"isic": {"train": 1, "validation": 2, "test": 3}},
        repeats,
    )


def _record(tmp_path, runs):
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps({"both data sets": {"runs": runs}, "recipe": {"runs": [{"dice": 0.1}]}}))
    return _repeats(str(path))


def test_runs_without_the_hold_out_give_the_spread_and_the_out_of_distribution_estimate(tmp_path):
    """bench.ablation's default: every "both data sets" run kept the hold-out out of training."""
    repeats = _record(tmp_path, [{"dice": 0.924, "held": 0.86}, {"dice": 0.926, "held": 0.84}])
    text = " ".join(_card(repeats).split())  # unwrap the card's lines
    assert "without the cross-source hold-out, over 2 seeds" in text and "0.9250 ± 0.0014" in text
    # mean ± sd of 0.86 and 0.84
    assert "trained without those images scored Dice 0.8500 ± 0.0141 over 2 seed(s)" in text
    assert "against 0.9250 here in distribution" in text
    assert "One training run" not in text


def test_runs_of_the_command_itself_give_its_spread_and_no_out_of_distribution_number(tmp_path):
    """bench.ablation --held-out none: the lever is the shipped command exactly."""
    repeats = _record(tmp_path, [{"dice": 0.926}, {"dice": 0.928}, {"dice": 0.927}])
    text = " ".join(_card(repeats).split())
    assert "The same command over 3 seeds" in text and "0.9270 ± 0.0010" in text
    assert "runs: 0.9260, 0.9280, 0.9270" in text
    assert "Out of distribution: not measured for this command" in text


def test_without_repeats_the_card_makes_no_claim_it_has_no_runs_for(tmp_path):
    assert _repeats(str(tmp_path / "missing.json")) == []
    text = " ".join(_card([]).split())
    assert "One training run (no seed repeats)" in text
    assert "Out of distribution: not measured" in text and "± " not in text


def test_a_model_trained_without_the_policy_reads_the_lever_of_its_own_setting(tmp_path):
    """The shipped model predates the dermoscopy policy: its seeds are the other lever's runs."""
    path = tmp_path / "ablation.json"
    record = {
        "both data sets": {"runs": [{"dice": 0.93, "held": 0.87}, {"dice": 0.93, "held": 0.87}]},
        "both data sets, default policy": {
            "runs": [{"dice": 0.92, "held": 0.85}, {"dice": 0.92, "held": 0.86}]
        },
    }
    path.write_text(json.dumps(record))
    repeats = _repeats(str(path), "default")
    assert [r["held"] for r in repeats] == [0.85, 0.86]
    text = " ".join(_card(repeats, policy="default").split())
    assert 'lever "both data sets, default policy"' in text and "with the default policy" in text
    assert "0.8550 ± 0.0071" in text
