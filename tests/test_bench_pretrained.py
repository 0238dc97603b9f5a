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


def _card(repeats):
    config = SimpleNamespace(width=16, image_size=128, epochs=15)
    row = {"size_mb": 8.3, "train_min": 26}
    return card(
        config,
        _summary(),
        row,
        "train.py --recipe best",
        {"isic": {"train": 1, "validation": 2, "test": 3}},
        repeats,
    )


def test_the_card_reports_the_hold_out_from_runs_that_never_trained_on_it(tmp_path):
    record = {
        "both data sets": {
            "runs": [
                {"dice": 0.926, "held": None},
                {"dice": 0.928, "held": None},
                {"dice": 0.924, "held": 0.86},
                {"dice": 0.925, "held": 0.84},
            ]
        }
    }
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(record))
    repeats = _repeats(str(path))
    text = " ".join(_card(repeats).split())  # unwrap the card's lines
    # the shipped command's own seeds give the spread in distribution; the hold-out-excluded ones
    # give the out-of-distribution line, as mean ± sd (0.85 ± 0.0141)
    assert "over 2 seeds (bench.ablation" in text and "0.9270 ± 0.0014" in text
    assert "trained without them scored Dice 0.8500 ± 0.0141 over 2 seed(s)" in text
    assert "against 0.9250 here in distribution" in text


def test_without_hold_out_runs_the_card_makes_no_out_of_distribution_claim(tmp_path):
    assert _repeats(str(tmp_path / "missing.json")) == []
    text = " ".join(_card([]).split())
    assert "One training run (no seed repeats)" in text
    assert "Out of distribution" not in text
