"""`--aug-policy reference`: the reference's augmentation (albumentations 0.5.2's RandomRotate90,
ElasticTransform(alpha=120, sigma=6, alpha_affine=3.6), ShiftScaleRotate(p=0.5, scale 0.1, rotate
10, no shift, reflected border)), on the accelerator and joint on image and mask."""

from __future__ import annotations

import numpy as np
import pytest

from skinseg.data_pipeline.augment import (
    RandomRotate90,
    ReferenceElastic,
    ShiftScaleRotate,
    reference_augmenter,
)


def _batch(n=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack(
        [
            ((yy - rng.uniform(20, 44)) ** 2 + (xx - rng.uniform(20, 44)) ** 2 < rng.uniform(80, 200))
            for _ in range(n)
        ]
    ).astype("float32")[..., None]
    # the image carries its own mask in channel 0 (and two smooth ramps): a joint warp keeps them equal
    images = np.concatenate(
        [
            masks,
            np.broadcast_to(yy[None, ..., None] / size, masks.shape),
            np.broadcast_to(xx[None, ..., None] / size, masks.shape),
        ],
        -1,
    ).astype("float32")
    return {"images": images, "segmentation_masks": masks}


def test_rotate90_gives_the_four_rotations_and_never_a_mirror_image():
    data = _batch(n=64, size=16)
    out = RandomRotate90(seed=1)(data, training=True)
    images, masks = np.asarray(out["images"]), np.asarray(out["segmentation_masks"])
    seen = set()
    for k in range(64):
        found = [
            t for t in range(4) if np.array_equal(images[k], np.rot90(data["images"][k], t, axes=(0, 1)))
        ]
        assert len(found) == 1, k
        np.testing.assert_array_equal(
            masks[k], np.rot90(data["segmentation_masks"][k], found[0], axes=(0, 1))
        )
        seen.add(found[0])
    assert seen == {0, 1, 2, 3}
    np.testing.assert_array_equal(RandomRotate90(seed=1)(data, training=False)["images"], data["images"])


@pytest.mark.parametrize(
    "layer", [ReferenceElastic(seed=2), ShiftScaleRotate(rate=1.0, seed=3)], ids=["elastic", "ssr"]
)
def test_image_and_mask_are_warped_by_the_same_field(layer):
    data = _batch()
    out = layer(data, training=True)
    image_mask = np.asarray(out["images"])[..., 0]  # channel 0 was the mask: warped bilinearly
    mask = np.asarray(out["segmentation_masks"])[..., 0]  # warped by its nearest pixel
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert not np.array_equal(mask, data["segmentation_masks"][..., 0])  # it moved
    # nearest and bilinear reads of the same field agree wherever the bilinear read is clear-cut
    clear = (image_mask < 0.3) | (image_mask > 0.7)
    assert np.mean((image_mask[clear] > 0.5) == (mask[clear] > 0.5)) > 0.995


def _smoothness(field):
    return float(np.mean(np.abs(np.diff(field, axis=0))) + np.mean(np.abs(np.diff(field, axis=1)))) / 2


def test_elastic_field_matches_albumentations_in_size_and_smoothness():
    """The displacement is alpha x (uniform noise blurred by a Gaussian of sigma), in pixels: the
    mean absolute displacement and its mean neighbour-to-neighbour change agree with
    albumentations 2's ElasticTransform(alpha=120, sigma=6, noise_distribution="uniform") on
    128 px images within 10 %, away from the border: albumentations 2 blurs the noise with
    OpenCV's BORDER_REPLICATE, 0.5.2 (the reference's) and this layer as scipy's gaussian_filter
    (mode reflect, the edge pixel repeated), which changes the field within 4 sigma = 24 px of the
    edges."""
    from albumentations.augmentations.geometric import functional as fgeometric

    rng = np.random.default_rng(0)
    theirs = [
        f
        for _ in range(16)
        for f in fgeometric.generate_displacement_fields(
            (128, 128),
            120.0,
            6.0,
            same_dxdy=False,
            kernel_size=(0, 0),
            random_generator=rng,
            noise_distribution="uniform",
        )
    ]
    dy, dx = ReferenceElastic(seed=5).field(16, 128, 128)
    inner = (slice(24, -24), slice(24, -24))
    ours = [f[inner] for f in (*np.asarray(dy), *np.asarray(dx))]
    theirs = [f[inner] for f in theirs]
    size = (np.mean([np.abs(f).mean() for f in ours]), np.mean([np.abs(f).mean() for f in theirs]))
    smooth = (np.mean([_smoothness(f) for f in ours]), np.mean([_smoothness(f) for f in theirs]))
    assert size[0] == pytest.approx(size[1], rel=0.1), size
    assert smooth[0] == pytest.approx(smooth[1], rel=0.1), smooth
    assert 1.0 < size[0] < 6.0  # a few pixels: alpha 120 with sigma 6 is a gentle warp


def test_shift_scale_rotate_applies_to_about_half_and_keeps_the_rest():
    data = _batch(n=200, size=16)
    out = np.asarray(ShiftScaleRotate(seed=4)(data, training=True)["images"])
    unchanged = np.mean([np.array_equal(out[k], data["images"][k]) for k in range(200)])
    assert 0.38 < unchanged < 0.62


def test_the_reference_pipeline_runs_jointly_in_a_compiled_function():
    import tensorflow as tf

    augmenter = reference_augmenter(seed=0)
    data = _batch()
    out = tf.function(lambda d: augmenter(d, training=True))(data)
    assert out["images"].shape == (4, 64, 64, 3) and out["segmentation_masks"].shape == (4, 64, 64, 1)
    assert set(np.unique(np.asarray(out["segmentation_masks"]))) <= {0.0, 1.0}


def test_the_reference_policy_runs_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        out = reference_augmenter(seed=0)(_batch(n=2, size=32), training=True)
        assert np.asarray(out["images"]).dtype == np.float32 and np.isfinite(np.asarray(out["images"])).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_training_clahe_then_colour_constancy_in_prepare_images_order():
    """With a random CLAHE clip the cache holds the images before both steps; the map after it
    applies CLAHE, then colour constancy, as prepare_image does everywhere else."""
    import tensorflow as tf

    from skinseg.data_pipeline.preprocess import clahe, shades_of_gray
    from skinseg.data_pipeline.tfdata import _random_clahe

    rng = np.random.default_rng(3)
    image = (rng.random((32, 32, 3)) * np.array([0.5, 0.8, 1.0]) * 255).astype(np.uint8)
    mapped = _random_clahe((3.0, 3.0), (32, 32), True)  # a one-point range: the clip is 3
    out, _ = mapped((tf.constant(image), tf.zeros((32, 32, 1), tf.uint8)), tf.constant(7, tf.int64))
    np.testing.assert_array_equal(out.numpy(), shades_of_gray(clahe(image, 3.0)))
    assert not np.array_equal(out.numpy(), clahe(shades_of_gray(image), 3.0))  # the order matters
