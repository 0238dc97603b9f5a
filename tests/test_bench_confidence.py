import csv

import numpy as np
import pytest

from bench.confidence import group_difference, read_joined, validate


def test_the_gap_is_the_rest_minus_the_low_group_with_a_ci_inside_the_extremes():
    dice = np.array([0.2, 0.4, 0.8, 1.0])
    low = np.array([True, True, False, False])
    gap = group_difference(dice, low)
    assert gap["dice_low"] == pytest.approx(0.3) and gap["dice_rest"] == pytest.approx(0.9)
    assert gap["difference"] == pytest.approx(0.6)
    lo, hi = gap["ci"]
    # resampling each group can only move its mean between its extremes: 0.8 - 0.4 .. 1.0 - 0.2
    assert 0.4 - 1e-9 <= lo <= 0.6 <= hi <= 0.8 + 1e-9


def test_a_confidence_that_orders_the_dice_gives_spearman_one_and_picks_the_worst_tenth():
    dice = np.linspace(0.1, 1.0, 20)
    conf = dice**2  # monotone: the same ranking
    flagged = conf < 0.03  # 0.1 and ~0.147 squared (0.010, 0.022; the third is 0.038): the two worst
    result = validate(conf, flagged, dice)
    assert result["spearman"] == pytest.approx(1.0)
    least = result["least_confident"]
    assert least["n_low"] == 2 and least["dice_low"] == pytest.approx(dice[:2].mean())
    assert result["flagged"]["n_low"] == 2
    reversed_result = validate(-conf, flagged, dice)
    assert reversed_result["spearman"] == pytest.approx(-1.0)
    assert reversed_result["least_confident"]["difference"] < 0


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_predictions_and_evaluation_are_joined_by_image_id(tmp_path):
    preds = tmp_path / "predictions.csv"
    per_image = tmp_path / "per_image.csv"
    _write(
        preds,
        ["image", "mask", "confidence", "flagged"],
        [[f"/photos/ISIC_{i:07d}.jpg", f"ISIC_{i:07d}.png", i / 20, int(i < 3)] for i in range(12)],
    )
    # evaluation in another order, with one image predict.py did not see and one it did not score
    rows = [[f"ISIC_{i:07d}", 1 - i / 20] for i in reversed(range(1, 13))]
    _write(per_image, ["id", "dice"], rows)
    ids, conf, flagged, dice = read_joined(str(preds), str(per_image))
    assert ids == [f"ISIC_{i:07d}" for i in range(1, 12)]
    np.testing.assert_allclose(conf, np.arange(1, 12) / 20)
    np.testing.assert_allclose(dice, 1 - np.arange(1, 12) / 20)
    assert flagged.tolist() == [True, True] + [False] * 9


def test_a_file_that_is_not_predictions_csv_is_named_in_the_error(tmp_path):
    wrong = tmp_path / "per_image.csv"
    _write(wrong, ["id", "dice"], [["a", 0.5]])
    with pytest.raises(ValueError, match=r"per_image.csv: not a predict.py predictions.csv"):
        read_joined(str(wrong), str(wrong))
    preds = tmp_path / "predictions.csv"
    _write(preds, ["image", "confidence", "flagged"], [["x.jpg", 0.5, 0]])
    with pytest.raises(ValueError, match="share 0 image"):
        read_joined(str(preds), str(wrong))
