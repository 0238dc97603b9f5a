"""Per-image quality: the confidence score against hand-computed maps, the checks, and what
predict.py writes (predictions.csv, marked overlays, the summary line)."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from PIL import Image

from skinseg.inference import quality
from skinseg.inference.quality import MaskQuality, assess, confidence


def test_confidence_is_the_decided_share_of_lesion_or_undecided_pixels():
    p = np.full((10, 10), 0.01, np.float32)
    p[0, :4] = 0.95  # 4 decided lesion pixels
    p[1, :2] = 0.6  # 2 lesion pixels, undecided
    p[2, :3] = 0.3  # 3 undecided background pixels
    assert confidence(p) == pytest.approx(6 / 11)  # lesion 6, undecided 5
    assert confidence(np.full((4, 4), 0.02, np.float32)) == 1.0  # a confident "nothing here"
    assert confidence(np.full((4, 4), 0.4, np.float32)) == 0.0  # nothing decided, nothing found


def test_the_checks_of_a_mask():
    class Prediction:
        at_input = np.zeros((8, 8), np.float32)

    mask = np.zeros((20, 30), bool)
    mask[0:3, 0:3] = True  # touches the border
    mask[10:12, 10:14] = True
    mask[15, 20] = True
    q = assess(Prediction(), mask)
    assert (q.touches_border, q.components, q.area_fraction) == (True, 3, pytest.approx(18 / 600))
    assert q.confidence == 1.0 and not q.flagged
    assert MaskQuality(0.1, False, 1, quality.FLAG_BELOW - 0.01).flagged


@pytest.mark.integration
def test_predict_writes_predictions_csv_and_marks_flagged_overlays(tmp_path, monkeypatch, capsys):
    from skinseg.cli import predict
    from skinseg.data_pipeline.synthetic import synthetic_pair
    from skinseg.models.registry import build_model

    images = tmp_path / "in"
    images.mkdir()
    for k in range(3):
        Image.fromarray(synthetic_pair(0, k, (40, 48))[0]).save(images / f"img{k}.jpg")
    model = str(tmp_path / "m.keras")
    build_model("baseline", 32, width=2, depth=1).save(model)  # untrained: undecided everywhere
    monkeypatch.setattr(quality, "FLAG_BELOW", 1.01)  # every mask flagged
    out = tmp_path / "out"
    assert predict.main(["--model", model, str(images), "--out", str(out), "--overlay"]) == 0
    rows = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert [r["mask"] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert all(r["flagged"] == "1" and 0 <= float(r["confidence"]) <= 1 for r in rows)
    assert "3 of 3 mask(s) flagged for review" in capsys.readouterr().out
    corner = np.asarray(Image.open(out / "overlays" / "img0.jpg"))[0, 0].astype(int)
    assert abs(corner[0] - 255) < 40 and abs(corner[1] - 140) < 40 and corner[2] < 60  # the orange frame
    assert os.path.exists(out / "img0.png")
