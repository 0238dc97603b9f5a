"""Every augmentation layer used for joint transforms must move image and mask together.
The image's pixels encode the mask, so any disagreement after a transform is a misalignment."""

import keras
import numpy as np
import pytest
from scipy import ndimage

from skinseg.data_pipeline.augment import POLICIES, JointElasticTransform, RandomTranspose, build_augmenter
from skinseg.data_pipeline.synthetic import synthetic_pair


def _batch(n=8, size=64):
    masks = np.stack([synthetic_pair(0, i, (size, size))[1] for i in range(n)])[..., None].astype("float32")
    images = np.repeat(masks, 3, axis=-1)  # the image *is* the mask
    return images, masks


def _misaligned(images, masks):
    """Pixels where image and mask disagree, away from the mask's outline (where bilinear image
    interpolation and nearest-neighbour mask interpolation may legitimately differ by one pixel)."""
    disagree = (images[..., 0] > 0.5) != (masks[..., 0] > 0.5)
    inner = np.stack([ndimage.binary_erosion(m[..., 0] > 0.5) for m in masks])
    outer = np.stack([~ndimage.binary_dilation(m[..., 0] > 0.5) for m in masks])
    return (disagree & (inner | outer)).sum()


GEOMETRIC = ["aug_flip", "aug_transpose", "aug_rotation", "aug_zoom", "aug_translation", "aug_elastic"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_layers_transform_image_and_mask_jointly(name, policy):
    images, masks = _batch()
    settings = {"rotation": 0.1, "zoom": 0.2, "translation": 0.1, **POLICIES[policy]}
    augmenter = build_augmenter(seed=0, elastic=1.0, **settings)
    layer = next(layer for layer in augmenter.layers if layer.name == name)
    out = layer({"images": images, "segmentation_masks": masks}, training=True)
    out_images, out_masks = (
        keras.ops.convert_to_numpy(out["images"]),
        keras.ops.convert_to_numpy(out["segmentation_masks"]),
    )
    assert (out_masks != masks).mean() > 0.005, "the layer must actually move the mask"
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    if name in ("aug_flip", "aug_transpose"):  # pixel permutations: exact
        np.testing.assert_array_equal(out_images[..., :1], out_masks)
    else:
        assert _misaligned(out_images, out_masks) == 0


def test_stock_elastic_with_dict_misaligns_which_is_why_we_wrap_it():
    images, masks = _batch()
    stock = keras.layers.RandomElasticTransform(factor=1.0, scale=1.0, value_range=(0, 1), seed=0)
    out = stock({"images": images, "segmentation_masks": masks}, training=True)
    stock_bad = _misaligned(
        keras.ops.convert_to_numpy(out["images"]), keras.ops.convert_to_numpy(out["segmentation_masks"])
    )
    ours = JointElasticTransform(rate=1.0, scale=1.0, seed=0)({"images": images, "segmentation_masks": masks})
    assert (
        _misaligned(
            keras.ops.convert_to_numpy(ours["images"]), keras.ops.convert_to_numpy(ours["segmentation_masks"])
        )
        == 0
    )
    assert stock_bad > 0  # if Keras fixes this, JointElasticTransform can go


COLOUR = ["aug_brightness", "aug_contrast", "aug_hue", "aug_saturation"]


@pytest.mark.parametrize("name", COLOUR)
def test_colour_layers_leave_masks_alone_and_change_images(name):
    images = np.stack([synthetic_pair(0, i, (32, 32))[0] for i in range(4)]).astype("float32") / 255
    masks = _batch(4, 32)[1]
    augmenter = build_augmenter(0, **POLICIES["strong"])
    layer = next(layer for layer in augmenter.layers if layer.name == name)
    out = layer({"images": images, "segmentation_masks": masks}, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out["segmentation_masks"]), masks)
    changed = keras.ops.convert_to_numpy(out["images"])
    assert np.abs(changed - images).mean() > 1e-3 and changed.min() >= 0 and changed.max() <= 1


def test_saturation_range_is_symmetric_about_no_change():
    """Keras' 0.5 is "no change": a range of +-s about it, as documented; beyond 0.5 is refused."""
    image = np.stack([synthetic_pair(0, 0, (32, 32))[0]]).astype("float32") / 255
    layer = next(x for x in build_augmenter(0, saturation=1e-6).layers if x.name == "aug_saturation")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(image, training=True)), image, atol=1e-3)
    grey = next(x for x in build_augmenter(0, saturation=0.5).layers if x.name == "aug_saturation")
    spreads = [
        np.ptp(keras.ops.convert_to_numpy(grey(image, training=True))[0], axis=-1).mean() for _ in range(20)
    ]
    original = np.ptp(image[0], axis=-1).mean()
    assert min(spreads) < 0.5 * original and max(spreads) > 1.2 * original  # desaturates and saturates
    with pytest.raises(ValueError, match=r"saturation must be in \(0, 0.5\]; got 0.7"):
        build_augmenter(0, saturation=0.7)


def test_full_policy_is_seeded_and_inactive_outside_training():
    images, masks = _batch(4)

    def data():  # Keras' preprocessing layers overwrite the dict they are given
        return {"images": images, "segmentation_masks": masks}

    first = build_augmenter(seed=7)(data(), training=True)
    second = build_augmenter(seed=7)(data(), training=True)
    other = build_augmenter(seed=8)(data(), training=True)
    for key in ("images", "segmentation_masks"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(first[key]), keras.ops.convert_to_numpy(second[key])
        )
        assert not np.array_equal(
            keras.ops.convert_to_numpy(first[key]), keras.ops.convert_to_numpy(other[key])
        )
    idle = build_augmenter(seed=7)(data(), training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(idle["images"]), images)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(idle["segmentation_masks"]), masks)


def test_random_transpose_on_plain_tensors():
    x = np.arange(2 * 3 * 3).reshape(2, 3, 3, 1).astype("float32")
    out = keras.ops.convert_to_numpy(RandomTranspose(seed=1)(x, training=True))
    for a, b in zip(out, x):
        assert np.array_equal(a, b) or np.array_equal(a, b.transpose(1, 0, 2))


@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_elastic_rate_is_the_share_of_images_warped(rate):
    """Keras draws each image's probability from U(0, factor) for a single float, which would warp
    about rate/2 of the images; over 1,000 images the share must be `rate` within 0.05. (The draw
    itself is read: warping 1,000 images takes Keras minutes on a CPU.)"""
    images = np.zeros((1000, 8, 8, 4), "float32")
    layer = JointElasticTransform(rate=rate, scale=1.0, seed=1)
    decision = layer.elastic.get_random_transformation(images, training=True)
    warped = keras.ops.convert_to_numpy(decision["apply_transform"])
    assert warped.shape == (1000,) and abs(warped.mean() - rate) < 0.05
    stock = keras.layers.RandomElasticTransform(factor=rate, seed=1).get_random_transformation(images)
    assert keras.ops.convert_to_numpy(stock["apply_transform"]).mean() < rate - 0.05  # the trap
    small = np.random.default_rng(0).random((4, 8, 8, 3)).astype("float32")
    masks = np.zeros((4, 8, 8, 1), "float32")
    always = JointElasticTransform(rate=1.0, scale=1.0, seed=1)(
        {"images": small, "segmentation_masks": masks}
    )
    assert (np.abs(keras.ops.convert_to_numpy(always["images"]) - small).max(axis=(1, 2, 3)) > 1e-6).all()
