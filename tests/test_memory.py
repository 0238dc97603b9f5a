"""predict.py streams: its peak memory must not grow with the number of (large) images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from skinseg.models.registry import build_model
from tests.conftest import ROOT

pytestmark = pytest.mark.integration  # starts processes

CHILD = """
import json, resource, sys
sys.path.insert(0, {root!r})
from skinseg.cli import predict
code = predict.main(["--model", {model!r}, {folder!r}, "--out", {out!r}, "--overlay", "--batch-size", "2"])
print(json.dumps({{"code": code, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _peak(model, folder, out):
    script = CHILD.format(root=ROOT, model=model, folder=folder, out=out)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_peak_rss_is_bounded_by_the_batch_not_the_folder(tmp_path):
    model = str(tmp_path / "model.keras")
    build_model("baseline", 32, width=4, depth=2).save(model)
    yy, xx = np.mgrid[0:2000, 0:3000]
    image = np.dstack([xx * 255 // 3000, yy * 255 // 2000, (xx + yy) % 256]).astype(np.uint8)
    few, many = tmp_path / "few", tmp_path / "many"
    for folder, count in ((few, 2), (many, 12)):
        folder.mkdir()
        for k in range(count):
            Image.fromarray(np.roll(image, k, axis=1)).save(folder / f"img{k:02d}.jpg", quality=80)
    small = _peak(model, str(few), str(tmp_path / "out_few"))
    large = _peak(model, str(many), str(tmp_path / "out_many"))
    assert small["code"] == large["code"] == 0
    assert len(os.listdir(tmp_path / "out_many")) == 15  # 12 masks, overlays/, the record, predictions.csv
    # 10 more 6-megapixel images held at once would add > 600 MB (RGB + probabilities + mask)
    assert large["peak_mb"] - small["peak_mb"] < 150, (small, large)
