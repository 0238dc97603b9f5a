import math

import numpy as np
import pandas as pd
import pytest
from medpy.metric import binary as mb

from skinseg.metrics import (
    METRICS,
    ShapeMismatchError,
    image_metrics,
    overlap_metrics,
    summarize,
    surface_metrics,
)
from skinseg.metrics.surface import joint_crop


def _m(rows):
    return np.array(rows, bool)


def test_hand_computed_3x3():
    pred = _m([[1, 1, 0], [1, 1, 0], [0, 0, 0]])  # 4 pixels
    truth = _m([[0, 1, 1], [0, 1, 1], [0, 0, 0]])  # 4 pixels, 2 shared
    m = overlap_metrics(pred, truth)
    assert m["dice"] == pytest.approx(2 * 2 / 8)
    assert m["jaccard"] == pytest.approx(2 / 6)
    assert m["threshold_jaccard"] == 0.0  # 0.33 < 0.65
    assert m["sensitivity"] == pytest.approx(2 / 4)
    assert m["specificity"] == pytest.approx(3 / 5)  # TN = 3, FP = 2
    assert m["accuracy"] == pytest.approx(5 / 9)
    assert m["volume_similarity"] == 1.0
    s = surface_metrics(pred, truth)
    # every pixel of a 2x2 square is on its surface; each is 0 or 1 column from the other square
    # ITK's average Hausdorff: over all 4 pixels of each square, 2 are shared (0) and 2 are 1 away
    assert s == pytest.approx(
        {
            "hd": 1.0,
            "hd95": 1.0,
            "asd_medpy": 0.5,
            "assd_medpy": 0.5,
            "avg_hausdorff": 0.5,
            "hausdorff_itk": 1.0,
        }
    )


def test_hand_computed_5x5_asymmetric_asd():
    truth = np.zeros((5, 5), bool)
    truth[1:4, 1:4] = True  # 3x3 square: 8 surface pixels (the centre is interior)
    pred = np.zeros((5, 5), bool)
    pred[2, 2] = True  # its centre
    s = surface_metrics(pred, truth)
    assert s["asd_medpy"] == pytest.approx(1.0)  # from the single predicted pixel to the nearest ring pixel
    backward = [1.0, 1.0, 1.0, 1.0, math.sqrt(2)] + [math.sqrt(2)] * 3  # ring -> centre
    assert s["assd_medpy"] == pytest.approx((1.0 + sum(backward)) / 9)
    assert s["hd"] == pytest.approx(math.sqrt(2))
    assert s["asd_medpy"] != pytest.approx(surface_metrics(truth, pred)["asd_medpy"])  # directed
    assert s["assd_medpy"] == pytest.approx(surface_metrics(truth, pred)["assd_medpy"])  # symmetric
    # ITK, over all pixels: the centre lies in the square (0); of the square's 9 pixels, the centre
    # is 0 away, 4 edge pixels 1 and 4 corners sqrt(2): (0 + (4 + 4 sqrt 2) / 9) / 2
    assert s["avg_hausdorff"] == pytest.approx((4 + 4 * math.sqrt(2)) / 9 / 2)
    # The region Hausdorff (the reference's HD) is the corner's sqrt 2 here, like the boundary one;
    # a boundary inside the lesion is where they part (next test).
    assert s["hausdorff_itk"] == pytest.approx(math.sqrt(2))
    m = overlap_metrics(pred, truth)
    assert m["volume_similarity"] == pytest.approx(1 - 8 / 10)
    assert m["threshold_jaccard"] == 0.0 and m["jaccard"] == pytest.approx(1 / 9)


def test_known_shift_gives_known_distance_and_spacing_scales_it():
    truth = np.zeros((40, 40), bool)
    truth[10:20, 10:20] = True
    pred = np.roll(truth, 3, axis=1)
    s = surface_metrics(pred, truth)
    assert s["hd"] == pytest.approx(3.0) and s["hd95"] == pytest.approx(3.0)
    scaled = surface_metrics(pred, truth, spacing=(0.5, 2.0))
    assert scaled["hd"] == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("pred_any", "truth_any", "case", "dice", "distance"),
    [
        (False, False, "both_empty", 1.0, 0.0),
        (False, True, "prediction_empty", 0.0, math.hypot(8, 6)),
        (True, False, "truth_empty", 0.0, math.hypot(8, 6)),
    ],
)
def test_every_empty_combination_is_defined(pred_any, truth_any, case, dice, distance):
    pred, truth = np.zeros((8, 6), bool), np.zeros((8, 6), bool)
    pred[2:4, 2:4] = pred_any
    truth[3:6, 1:4] = truth_any
    m = image_metrics(pred, truth)
    assert m["empty_case"] == case
    assert m["dice"] == dice and m["jaccard"] == dice
    assert all(
        m[k] == pytest.approx(distance) for k in ("hd", "hd95", "asd_medpy", "assd_medpy", "avg_hausdorff")
    )
    assert m["sensitivity"] == (1.0 if not truth_any else 0.0)
    nan = image_metrics(pred, truth, empty="nan")
    assert case == "both_empty" or math.isnan(nan["hd"])


def _blob(rng, shape=(96, 128)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(3, 30, 2)
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    return mask


def test_equal_to_plain_medpy_on_random_blobs():
    rng = np.random.default_rng(0)
    for _ in range(30):
        pred, truth = _blob(rng), _blob(rng)
        if not (pred.any() and truth.any()):
            continue
        spacing = None if rng.random() < 0.5 else tuple(rng.uniform(0.5, 2, 2))
        m = image_metrics(pred, truth, spacing=spacing)
        assert m["hd"] == pytest.approx(mb.hd(pred, truth, spacing), abs=1e-9)
        assert m["hd95"] == pytest.approx(mb.hd95(pred, truth, spacing), abs=1e-9)
        assert m["asd_medpy"] == pytest.approx(mb.asd(pred, truth, spacing), abs=1e-9)
        assert m["assd_medpy"] == pytest.approx(mb.assd(pred, truth, spacing), abs=1e-9)
        assert m["dice"] == pytest.approx(mb.dc(pred, truth), abs=1e-12)
        assert m["jaccard"] == pytest.approx(mb.jc(pred, truth), abs=1e-12)
        assert m["sensitivity"] == pytest.approx(mb.sensitivity(pred, truth), abs=1e-12)
        assert m["specificity"] == pytest.approx(mb.specificity(pred, truth), abs=1e-12)


def test_average_hausdorff_is_simpleitks_on_the_whole_image_with_spacing():
    """The value on the cropped masks equals SimpleITK's filter run on the full images, on
    synthetic-lesion masks of a realistic size; spacing is honoured in ITK's (x, y) order."""
    import SimpleITK as sitk

    from skinseg.data_pipeline.synthetic import synthetic_pair

    def full_image(mask, spacing):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(spacing[::-1])
        return image

    for k in range(6):
        truth = synthetic_pair(0, k, (192, 256))[1]
        pred = np.roll(synthetic_pair(0, k + 100, (192, 256))[1] | truth, k, axis=k % 2)
        spacing = (1.0, 1.0) if k < 3 else (0.5, 2.0)
        f = sitk.HausdorffDistanceImageFilter()
        f.Execute(full_image(pred, spacing), full_image(truth, spacing))
        m = surface_metrics(pred, truth, spacing=None if k < 3 else spacing)
        assert m["avg_hausdorff"] == pytest.approx(f.GetAverageHausdorffDistance(), rel=1e-9)
        assert m["hausdorff_itk"] == pytest.approx(f.GetHausdorffDistance(), rel=1e-9)


def test_region_and_boundary_hausdorff_part_where_a_prediction_boundary_lies_inside_the_lesion():
    """A prediction with a hole: its inner boundary is 5 px from the truth's boundary (the boundary
    HD sees it) while every one of its pixels lies inside the truth, so the region HD (the
    reference's) only sees the truth's hole pixels, at most 3 px from the prediction."""
    truth = np.zeros((21, 21), bool)
    truth[2:19, 2:19] = True
    pred = truth.copy()
    pred[8:13, 8:13] = False  # a 5x5 hole in the middle
    s = surface_metrics(pred, truth)
    assert s["hausdorff_itk"] == pytest.approx(3.0)  # the hole's centre to the nearest kept pixel
    assert s["hd"] == pytest.approx(5.0)  # the hole's edge (row 7) to the truth's boundary (row 2)


def test_threshold_jaccard_at_exactly_the_threshold_is_kept():
    pred = np.zeros((4, 5), bool)
    truth = np.zeros((4, 5), bool)
    truth.flat[:20] = True  # union 20
    pred.flat[:13] = True  # intersection 13: Jaccard 13/20 = 0.65 exactly
    m = overlap_metrics(pred, truth)
    assert m["jaccard"] == 0.65 and m["threshold_jaccard"] == 0.65
    pred.flat[12] = False  # 12/20 = 0.6
    assert overlap_metrics(pred, truth)["threshold_jaccard"] == 0.0


def test_crop_is_clipped_at_the_border_and_keeps_values():
    truth = np.zeros((20, 20), bool)
    truth[0:6, 14:20] = True  # touches two image borders
    pred = np.zeros((20, 20), bool)
    pred[2:9, 11:20] = True
    rows, cols = joint_crop(pred, truth)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 10, 10, 20)
    assert surface_metrics(pred, truth)["hd"] == pytest.approx(mb.hd(pred, truth), abs=1e-12)


def test_equal_to_the_isic_challenge_scoring_package():
    from isic_challenge_scoring import metrics as isic
    from isic_challenge_scoring.confusion import create_binary_confusion_matrix

    rng = np.random.default_rng(1)
    for k in range(40):
        pred, truth = _blob(rng), _blob(rng)
        if k == 0:
            pred = truth = np.zeros_like(pred)  # their empty/empty convention too
        cm = create_binary_confusion_matrix(truth_binary_values=truth, prediction_binary_values=pred)
        ours = overlap_metrics(pred, truth)
        theirs = {
            "dice": isic.binary_dice(cm),
            "jaccard": isic.binary_jaccard(cm),
            "threshold_jaccard": isic.binary_threshold_jaccard(cm, threshold=0.65),
            "sensitivity": isic.binary_sensitivity(cm),
            "specificity": isic.binary_specificity(cm),
            "accuracy": isic.binary_accuracy(cm),
        }
        for name, value in theirs.items():
            assert ours[name] == pytest.approx(float(value), abs=1e-12), name
    assert isinstance(cm, pd.Series)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ShapeMismatchError, match=r"\(4, 4\) but the truth is \(4, 5\)"):
        image_metrics(np.zeros((4, 4)), np.zeros((4, 5)))


def test_summary_counts_empty_and_nonfinite_cases():
    rows = [dict.fromkeys(METRICS, 0.5) | {"empty_case": ""} for _ in range(9)]
    rows[0] = dict(rows[0], hd=float("nan"), empty_case="prediction_empty")
    rows[1] = dict(rows[1], empty_case="both_empty", dice=1.0)
    summary = summarize(rows)
    assert summary["n"] == 9
    assert summary["empty_cases"] == {"both_empty": 1, "prediction_empty": 1, "truth_empty": 0}
    assert summary["metrics"]["hd"]["n"] == 8 and summary["metrics"]["hd"]["nonfinite"] == 1
    dice = summary["metrics"]["dice"]
    assert dice["mean"] == pytest.approx((8 * 0.5 + 1.0) / 9)
    assert dice["ci95"][0] <= dice["mean"] <= dice["ci95"][1]
    assert summary["metrics"]["jaccard"]["ci95"] == [0.5, 0.5]  # constant: no spread


def test_bootstrap_interval_covers_the_mean_of_a_normal_sample():
    rng = np.random.default_rng(3)
    rows = [dict.fromkeys(METRICS, float(v)) | {"empty_case": ""} for v in rng.normal(0.8, 0.1, 200)]
    ci = summarize(rows)["metrics"]["dice"]["ci95"]
    half_width = 1.96 * 0.1 / math.sqrt(200)
    assert ci[1] - ci[0] == pytest.approx(2 * half_width, rel=0.25)
