"""The shipped model: small enough for the repository, documented, and usable with no training."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from skinseg.cli import predict
from skinseg.inference.description import PRETRAINED, describe
from skinseg.inference.postprocess import PostProcessing

FOLDER = os.path.dirname(PRETRAINED)


def test_the_shipped_model_is_small_and_has_its_card_and_settings():
    assert os.path.getsize(PRETRAINED) <= 10 * 1024 * 1024
    card = open(os.path.join(FOLDER, "MODEL_CARD.md"), encoding="utf-8").read()
    for needed in ("CC-BY-NC", "research", "Known limits", "train.py --recipe best", "Dice"):
        assert needed in card
    saved = describe("pretrained")
    assert saved.path == PRETRAINED
    assert saved.post_source == os.path.join(FOLDER, "postprocess.json")  # its digest names this file
    assert saved.preprocessing.color_constancy  # the recipe's, read from preprocessing.json
    with open(os.path.join(FOLDER, "postprocess.json"), encoding="utf-8") as handle:
        assert saved.post == PostProcessing.from_json(json.load(handle))


@pytest.mark.integration
def test_predict_with_the_pretrained_model_on_images_of_any_size(tmp_path):
    """A dark, roughly round lesion on light skin, at three sizes: the mask comes back at each
    image's size and covers the lesion rather than the skin."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"small.jpg": (90, 120), "odd.png": (301, 257), "large.jpg": (767, 1022)}.items():
        yy, xx = np.mgrid[:h, :w]
        lesion = ((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2 <= 1
        image = np.empty((h, w, 3), np.float32)
        image[:] = (215, 170, 150)
        image[lesion] = (95, 60, 45)
        image += rng.normal(0, 6, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(photos / name)
    out = tmp_path / "masks"
    assert predict.main(["--model", "pretrained", str(photos), "--out", str(out)]) == 0
    for name, (h, w) in {"small": (90, 120), "odd": (301, 257), "large": (767, 1022)}.items():
        mask = np.array(Image.open(out / f"{name}.png")) > 0
        assert mask.shape == (h, w)
        yy, xx = np.mgrid[:h, :w]
        lesion = ((yy - h / 2) / (h / 4)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2 <= 1
        dice = 2 * (mask & lesion).sum() / (mask.sum() + lesion.sum())
        assert dice > 0.8, (name, dice)
