"""Dermoscopy's photometric augmentation (data_pipeline.artifacts): each layer changes the images
as its docstring says, never the masks, is seeded, and does nothing outside training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from skinseg.data_pipeline import artifacts
from skinseg.data_pipeline.augment import POLICIES, build_augmenter

SIZE = 64


def _batch(value=0.5, n=4):
    images = np.full((n, SIZE, SIZE, 3), value, np.float32)
    masks = np.zeros((n, SIZE, SIZE, 1), np.float32)
    masks[:, 20:40, 10:50] = 1.0
    return images, masks


def _apply(layer, images, masks):
    out = layer({"images": images, "segmentation_masks": masks}, training=True)
    np.testing.assert_array_equal(np.asarray(out["segmentation_masks"]), masks)  # masks untouched
    result = np.asarray(out["images"])
    assert result.dtype == np.float32 and result.min() >= 0.0 and result.max() <= 1.0
    return result


LAYERS = {
    "illumination": lambda **k: artifacts.RandomIllumination(**k),
    "colour temperature": lambda **k: artifacts.RandomColourTemperature(**k),
    "vignette": lambda **k: artifacts.RandomVignette(**k),
    "hairs": lambda **k: artifacts.RandomHairs(**k),
    "bubbles": lambda **k: artifacts.RandomBubbles(**k),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_changes_images_only_is_seeded_and_idle_outside_training(name):
    images, masks = _batch()
    changed = _apply(LAYERS[name](rate=1.0, seed=3), images, masks)
    assert np.abs(changed - images).max() > 0.05
    again = _apply(LAYERS[name](rate=1.0, seed=3), images, masks)
    np.testing.assert_array_equal(changed, again)
    np.testing.assert_array_equal(_apply(LAYERS[name](rate=0.0, seed=3), images, masks), images)
    out = LAYERS[name](rate=1.0, seed=3)({"images": images, "segmentation_masks": masks}, training=False)
    np.testing.assert_array_equal(np.asarray(out["images"]), images)
    layer = LAYERS[name](rate=0.7, seed=5)
    assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_illumination_is_a_linear_ramp_within_its_strength():
    images, masks = _batch()
    gain = _apply(artifacts.RandomIllumination(strength=0.2, rate=1.0, seed=0), images, masks)[..., 0] / 0.5
    ys, xs = np.meshgrid(np.linspace(-1, 1, SIZE), np.linspace(-1, 1, SIZE), indexing="ij")
    for g in gain:
        design = np.stack([np.ones(SIZE * SIZE), ys.ravel(), xs.ravel()], axis=1)
        coef, *_ = np.linalg.lstsq(design, g.ravel(), rcond=None)
        np.testing.assert_allclose(design @ coef, g.ravel(), atol=1e-5)  # a plane
        assert coef[0] == pytest.approx(1.0, abs=1e-5)
        assert max(abs(coef[1]), abs(coef[2])) <= 0.2 + 1e-6


def test_colour_temperature_trades_red_against_blue_and_keeps_green():
    images, masks = _batch()
    out = _apply(artifacts.RandomColourTemperature(shift=0.12, rate=1.0, seed=1), images, masks)
    red, green, blue = (out[:, 0, 0, c] / 0.5 for c in range(3))
    np.testing.assert_allclose(green, 1.0, atol=1e-6)
    np.testing.assert_allclose(red + blue, 2.0, atol=1e-5)
    assert np.all(np.abs(red - 1.0) <= 0.12 + 1e-6)
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1], out.shape), atol=1e-6)  # uniform


def test_vignette_keeps_the_centre_and_darkens_the_corners():
    images, masks = _batch(value=0.8)
    out = _apply(artifacts.RandomVignette(rate=1.0, seed=2), images, masks)
    centre = out[:, SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4]
    np.testing.assert_allclose(centre, 0.8, atol=1e-3)
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1], 0]
    # the farthest corner is at least one half-diagonal from the centre, on or past the rim (radius
    # at most 1): at most (0.3 + 0.7 / 2) of the brightness there
    assert np.all(corners.min(axis=1) <= 0.8 * 0.65 + 1e-6)
    assert np.all(np.diff(out[:, SIZE // 2, SIZE // 2 :, 0], axis=1) <= 1e-6)  # darker outwards


def test_hairs_are_thin_dark_curves_and_bubbles_only_brighten():
    images, masks = _batch(value=0.9, n=8)
    hairs = _apply(artifacts.RandomHairs(rate=1.0, seed=4), images, masks)
    assert np.all(hairs <= 0.9 + 1e-6)
    dark = (hairs[..., 1] < 0.3).mean(axis=(1, 2))
    assert np.all(dark < 0.15) and dark.mean() > 0.005  # a few percent of the pixels, not a wash
    black, _ = _batch(value=0.1, n=8)
    bubbles = _apply(artifacts.RandomBubbles(rate=1.0, seed=4), black, masks)
    assert np.all(bubbles >= 0.1 - 1e-6) and bubbles.max() > 0.5


def test_the_dermoscopy_policy_transforms_masks_exactly_as_the_default_policy():
    """The photometric layers draw from their own seeds: the geometric ones, and so the masks,
    are the same with and without them."""
    rng = np.random.default_rng(0)
    images = rng.random((4, SIZE, SIZE, 3)).astype(np.float32)
    _, masks = _batch()

    def data():  # Keras' preprocessing layers overwrite the dict they are given
        return {"images": images, "segmentation_masks": masks}

    plain = build_augmenter(7)(data(), training=True)
    dermo = build_augmenter(7, **POLICIES["dermoscopy"])(data(), training=True)
    np.testing.assert_array_equal(
        np.asarray(plain["segmentation_masks"]), np.asarray(dermo["segmentation_masks"])
    )
    assert not np.allclose(np.asarray(plain["images"]), np.asarray(dermo["images"]))
    names = [layer.name for layer in build_augmenter(7, **POLICIES["dermoscopy"]).layers]
    assert names.index("aug_hairs") > names.index("aug_translation") and "aug_bubbles" in names
    assert keras.saving.get_registered_object("skinseg>RandomHairs") is artifacts.RandomHairs
