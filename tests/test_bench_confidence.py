import csv
import re
import unicodedata

import numpy as np
import pytest

from bench.confidence import group_difference, main, read_joined, validate


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


def test_a_constant_confidence_ranks_nothing_and_ties_are_not_broken_by_id():
    dice = np.linspace(0.1, 1.0, 20)  # sorted by ID: the first IDs are the worst
    result = validate(np.full(20, 0.5), np.zeros(20, bool), dice)
    assert np.isnan(result["spearman"]) and result["least_confident"] is None
    # two confidence levels, the low one shared by ten images: the tenth is drawn among those ten at
    # random, not the ten first IDs
    conf = np.array([0.2] * 10 + [0.9] * 10)
    picked = [
        validate(conf, np.zeros(20, bool), dice, seed=s)["least_confident"]["dice_low"] for s in range(8)
    ]
    assert len(set(np.round(picked, 6))) > 1
    assert all(0.1 <= d <= dice[9] for d in picked)


def _write(path, header, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _files(tmp_path, n=24, name=lambda i: f"ISIC_{i:07d}"):
    preds, per_image = tmp_path / "predictions.csv", tmp_path / "per_image.csv"
    _write(
        preds,
        ["image", "mask", "confidence", "flagged"],
        [[f"/photos/{name(i)}.jpg", f"{name(i)}.png", i / 40, int(i < 3)] for i in range(n)],
    )
    # evaluation in another order, one image predict.py did not see, one it did not score, one NaN
    rows = [[name(i), 1 - i / 40] for i in reversed(range(1, n + 1))] + [["ISIC_9999999", "nan"]]
    _write(per_image, ["id", "dice"], rows, encoding="utf-8-sig")  # with a BOM, as Excel saves it
    return preds, per_image


def test_predictions_and_evaluation_are_joined_by_image_id(tmp_path):
    joined = read_joined(*(str(f) for f in _files(tmp_path)))
    assert joined["ids"] == [f"ISIC_{i:07d}" for i in range(1, 24)]
    np.testing.assert_allclose(joined["confidence"], np.arange(1, 24) / 40)
    np.testing.assert_allclose(joined["dice"], 1 - np.arange(1, 24) / 40)
    assert joined["flagged"].tolist() == [True, True] + [False] * 21
    assert (joined["only_predicted"], joined["only_scored"], joined["dice_not_finite"]) == (1, 1, 1)


def test_a_name_decomposed_on_one_side_joins_with_the_composed_one(tmp_path):
    name = lambda i: unicodedata.normalize("NFD", f"lésion{i}")  # noqa: E731
    preds, per_image = _files(tmp_path, name=name)
    rows = list(csv.reader(open(per_image, encoding="utf-8-sig")))
    rows[1:] = [[unicodedata.normalize("NFC", r[0]), r[1]] for r in rows[1:]]
    _write(per_image, rows[0], rows[1:])
    assert len(read_joined(str(preds), str(per_image))["ids"]) == 23


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda rows: rows[:1], "predictions.csv: no rows"),
        (lambda rows: [["id", "dice"]] + rows[1:], "predictions.csv: no column 'image'"),
        (lambda rows: rows + [rows[1]], "predictions.csv: row 26: image ID ISIC_0000000 appears twice"),
        (
            lambda rows: rows[:2] + [[rows[2][0], rows[2][1], "", 0]] + rows[3:],
            "row 3: confidence '' is not a number",
        ),
        (
            lambda rows: rows[:2] + [[rows[2][0], rows[2][1], 0.5, "yes"]] + rows[3:],
            "row 3: flagged 'yes' is not 0 or 1",
        ),
        (lambda rows: rows[:12], "share 10 scored image"),
    ],
)
def test_a_bad_predictions_file_is_named_with_its_problem(tmp_path, edit, message):
    preds, per_image = _files(tmp_path)
    rows = list(csv.reader(open(preds, encoding="utf-8")))
    _write(preds, edit(rows)[0], edit(rows)[1:])
    with pytest.raises(ValueError, match=re.escape(message)):
        read_joined(str(preds), str(per_image))


def test_the_command_scores_a_chosen_subset_and_says_what_it_left_out(tmp_path, capsys):
    preds, per_image = _files(tmp_path, n=40)
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(f"ISIC_{i:07d}" for i in range(1, 41, 2)) + "\n")  # 20 odd IDs
    main(["--predictions", str(preds), "--per-image", str(per_image), "--ids", str(ids)])
    out = capsys.readouterr().out
    assert "20 images" in out and "Spearman(confidence, Dice) -1.000" in out
    assert "19 joined image(s) not in" in out and "1 Dice value(s) not finite" in out
    with pytest.raises(SystemExit, match="ids.txt: 1 of its IDs are scored"):
        ids.write_text("ISIC_0000001\n")
        main(["--predictions", str(preds), "--per-image", str(per_image), "--ids", str(ids)])
