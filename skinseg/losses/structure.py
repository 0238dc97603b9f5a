"""HarDNet-MSEG's (and PraNet's) structure loss: weighted BCE + weighted IoU, where pixels near
the lesion border weigh up to 6x: weight = 1 + 5 |avgpool31(mask) - mask|."""

from __future__ import annotations

import keras
from keras import ops


def border_weight(y_true):
    """PyTorch's avg_pool2d(31, stride 1, padding 15) counts the zero padding in the mean
    (count_include_pad), so pad explicitly and pool without padding."""
    padded = ops.pad(y_true, ((0, 0), (15, 15), (15, 15), (0, 0)))
    return 1.0 + 5.0 * ops.abs(ops.average_pool(padded, 31, strides=1, padding="valid") - y_true)


@keras.saving.register_keras_serializable(package="skinseg")
class StructureLoss(keras.losses.Loss):
    def __init__(self, name="structure", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        weight = border_weight(y_true)
        p = ops.clip(y_pred, keras.backend.epsilon(), 1.0 - keras.backend.epsilon())
        bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        wbce = ops.sum(weight * bce, axis=(1, 2, 3)) / ops.sum(weight, axis=(1, 2, 3))
        inter = ops.sum(y_pred * y_true * weight, axis=(1, 2, 3))
        union = ops.sum((y_pred + y_true) * weight, axis=(1, 2, 3))
        wiou = 1.0 - (inter + 1.0) / (union - inter + 1.0)
        return wbce + wiou
