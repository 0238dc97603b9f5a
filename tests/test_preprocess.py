import re

import numpy as np
import pytest

from skinseg.data_pipeline.preprocess import Preprocessing, prepare_image, shades_of_gray, shades_of_gray_tf


def _scene():
    rng = np.random.default_rng(0)
    grey = rng.uniform(50, 150, (16, 16, 1)).repeat(3, axis=-1)  # a grey world
    return grey.astype(np.uint8)


def test_shades_of_gray_removes_a_colour_cast_and_keeps_neutral_images():
    scene = _scene()
    np.testing.assert_allclose(shades_of_gray(scene).astype(int), scene.astype(int), atol=1)
    cast = (scene * np.array([0.6, 0.8, 1.0])).astype(np.uint8)  # a blue-tinted illuminant
    corrected = shades_of_gray(cast).astype(int)
    assert np.abs(corrected[..., 0] - corrected[..., 2]).max() <= 2  # neutral again
    assert corrected.dtype == int and corrected.min() >= 0 and corrected.max() <= 255


def test_the_exported_tensorflow_version_equals_the_pipelines():
    rng = np.random.default_rng(1)
    images = (rng.random((3, 20, 24, 3)) * np.array([0.5, 0.8, 1.0]) * 255).astype(np.uint8)
    ours = np.stack([shades_of_gray(image) for image in images]).astype(np.float32) / 255
    theirs = shades_of_gray_tf(images.astype(np.float32) / 255).numpy()
    assert np.abs(ours - theirs).max() <= 1 / 255 + 1e-6  # rounding at most one level apart
    assert np.mean(np.abs(ours - theirs) > 1e-6) < 0.01


def test_prepare_image_resizes_then_applies_the_steps_asked_for():
    image = (np.random.default_rng(2).random((40, 60, 3)) * 255).astype(np.uint8)
    plain = prepare_image(image, (16, 16))
    assert plain.shape == (16, 16, 3) and plain.dtype == np.uint8
    both = prepare_image(image, (16, 16), Preprocessing(clahe=True, color_constancy=True))
    assert both.shape == (16, 16, 3) and np.abs(both.astype(int) - plain).mean() > 1


@pytest.mark.parametrize("data", [{}, {"clahe": True}, {"color_constancy": True, "notes": ["for people"]}])
def test_preprocessing_round_trips_through_json(data):
    spec = Preprocessing.from_json(data)
    assert Preprocessing.from_json(spec.to_json()) == spec
    assert spec.clahe == data.get("clahe", False)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"clahe": "false"}, "clahe must be true or false, not 'false'"),  # a string would read as true
        ({"color_constancy": 1}, "color_constancy must be true or false, not 1"),
        ({"fit": "crop"}, "fit must be one of stretch, pad; got 'crop'"),
        ({"clahe": False, "modle": "x"}, "unknown key(s) modle"),
        (["clahe"], "not a JSON object"),
    ],
)
def test_preprocessing_files_are_read_strictly(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Preprocessing.from_json(data)
