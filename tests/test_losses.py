import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from skinseg.losses import get_loss
from skinseg.losses.flooding import flooded, flooded_gradient_only
from skinseg.losses.structure import StructureLoss, border_weight


def test_dice_and_bce_dice_hand_values():
    y = np.array([[[[1.0], [1.0]], [[0.0], [0.0]]]], "float32")
    p = np.array([[[[1.0], [0.5]], [[0.5], [0.0]]]], "float32")
    dice = float(get_loss("dice")(y, p))
    assert dice == pytest.approx(1 - 2 * 1.5 / (2 + 2), abs=1e-6)
    bce = float(get_loss("bce")(y, p))
    assert bce == pytest.approx(2 * np.log(2) / 4, abs=1e-4)  # Keras clips p=1/0 at 1e-7
    assert float(get_loss("bce_dice")(y, p)) == pytest.approx(bce + dice, abs=1e-6)


def _structure_reference(y, p):
    """PraNet/HarDNet-MSEG's structure_loss, re-derived in NumPy (with probabilities instead of
    logits): the 31x31 mean filter counts the zero padding, as PyTorch's avg_pool2d does."""
    out = []
    for yi, pi in zip(y[..., 0].astype(np.float64), p[..., 0].astype(np.float64)):
        weight = 1 + 5 * np.abs(ndimage.uniform_filter(yi, 31, mode="constant") - yi)
        bce = -(yi * np.log(pi) + (1 - yi) * np.log(1 - pi))
        wbce = (weight * bce).sum() / weight.sum()
        inter = (pi * yi * weight).sum()
        union = ((pi + yi) * weight).sum()
        out.append(wbce + 1 - (inter + 1) / (union - inter + 1))
    return np.mean(out)


def test_structure_loss_matches_reference():
    rng = np.random.default_rng(0)
    y = np.zeros((2, 40, 40, 1), "float32")
    y[0, 5:25, 10:30] = 1
    y[1, 20:38, 2:20] = 1
    p = rng.uniform(0.05, 0.95, y.shape).astype("float32")
    assert float(StructureLoss()(y, p)) == pytest.approx(_structure_reference(y, p), rel=1e-5)
    w = keras.ops.convert_to_numpy(border_weight(y))
    assert w.min() >= 1 and w.max() <= 6
    assert w[0, 15, 20, 0] == pytest.approx(1 + 5 * (1 - 400 / 961), rel=1e-5)  # whole lesion in the window


def test_focal_is_keras_and_unknown_name_lists_valid_ones():
    assert isinstance(get_loss("focal"), keras.losses.BinaryFocalCrossentropy)
    with pytest.raises(ValueError, match="bce, dice, bce_dice, focal, structure"):
        get_loss("lovasz")


def _grad(fn, value, level):
    x = tf.Variable(value)
    with tf.GradientTape() as tape:
        out = fn(x * 1.0, level)
    return float(out), float(tape.gradient(out, x))


def test_flooding_flips_the_gradient_below_the_level():
    assert _grad(flooded, 0.3, 0.1) == pytest.approx((0.3, 1.0))
    assert _grad(flooded, 0.05, 0.1) == pytest.approx((0.15, -1.0))  # 2b - L, gradient ascent
    # the trainer's form reports the true loss but follows the flooded gradient
    assert _grad(flooded_gradient_only, 0.05, 0.1) == pytest.approx((0.05, -1.0))
    assert _grad(flooded_gradient_only, 0.3, 0.1) == pytest.approx((0.3, 1.0))
    assert _grad(flooded_gradient_only, 0.3, 0.0) == pytest.approx((0.3, 1.0))  # b = 0: off
