"""Shared fixtures: tiny data sets the tests make themselves (never ../shared)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from skinseg.data_pipeline.image_io import write_image  # noqa: E402
from skinseg.data_pipeline.synthetic import synthetic_pair  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The smallest run that still exercises everything: a 2-level, 4-filter UNet at 32 px.
# What predict.py --export writes, by name (inference/export.py).
EXPORTED = ["model.keras", "model.tflite", "postprocess.json", "preprocessing.json", "saved_model"]

TINY_RUN = {
    "model": "baseline",
    "width": 4,
    "depth": 2,
    "image_size": 32,
    "batch_size": 4,
    "epochs": 1,
    "val_fraction": 0.2,
}
TINY_TRAIN_ARGS = [
    "--model",
    "baseline",
    "--width",
    "2",
    "--depth",
    "1",
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--val-fraction",
    "0.25",
    "--verbose",
    "0",
]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """The synthetic default set goes to a per-session folder, never ~/.cache."""
    home = tmp_path_factory.getbasetemp() / "skinseg_home"
    monkeypatch.setenv("SKINSEG_HOME", str(home))


def write_pairs(
    image_dir, mask_dir, ids, size=(48, 64), seed=0, mask_suffix="_segmentation", image_ext=".jpg", start=0
):
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    for k, id_ in enumerate(ids):
        image, mask = synthetic_pair(seed, start + k, size)
        write_image(os.path.join(image_dir, f"{id_}{image_ext}"), image)
        write_image(os.path.join(mask_dir, f"{id_}{mask_suffix}.png"), mask.astype(np.uint8) * 255)


def make_simple(root, n_train=12, n_test=4, size=(48, 64)):
    """{training,testing}/{image,label}, ISIC-style names."""
    train_ids = [f"ISIC_{i:07d}" for i in range(n_train)]
    test_ids = [f"ISIC_{i:07d}" for i in range(n_train, n_train + n_test)]
    write_pairs(
        os.path.join(root, "training", "image"), os.path.join(root, "training", "label"), train_ids, size
    )
    write_pairs(
        os.path.join(root, "testing", "image"),
        os.path.join(root, "testing", "label"),
        test_ids,
        size,
        start=n_train,
    )
    return str(root)


@pytest.fixture
def simple_dataset(tmp_path):
    return make_simple(tmp_path / "data")
