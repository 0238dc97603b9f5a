"""Soft Dice and BCE + Dice. Keras' `Dice` is the soft Dice over the whole batch (one ratio of
sums), which stays defined for images without a lesion."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="skinseg")
class BceDice(keras.losses.Loss):
    """Binary cross-entropy plus soft Dice, with equal weights."""

    def __init__(self, name="bce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce = keras.losses.BinaryCrossentropy()
        self.dice = keras.losses.Dice()

    def call(self, y_true, y_pred):
        return self.bce(y_true, y_pred) + self.dice(y_true, y_pred)
