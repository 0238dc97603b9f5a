"""The training wrapper around an inference network: augmentation and flooding live in the
compiled train step only, so the saved network is exactly what inference runs."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from skinseg.losses.flooding import flooded_gradient_only


class DiceScore(keras.metrics.Mean):
    """Mean per-image Dice of the thresholded prediction (1 when both masks are empty)."""

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold

    def update_state(self, y_true, y_pred, sample_weight=None):
        pred = ops.cast(y_pred > self.threshold, "float32")
        true = ops.cast(y_true > 0.5, "float32")
        inter = ops.sum(pred * true, axis=(1, 2, 3))
        total = ops.sum(pred, axis=(1, 2, 3)) + ops.sum(true, axis=(1, 2, 3))
        dice = ops.where(total > 0, 2.0 * inter / ops.maximum(total, 1.0), 1.0)
        return super().update_state(dice, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


class SegmentationTrainer(keras.Model):
    """`fit` this, save `.network`. The augmenter sees {"images", "segmentation_masks"} batches
    on the device; `flood_level` is a variable so that a callback can move it during training."""

    def __init__(self, network: keras.Model, augmenter: keras.layers.Layer | None = None, **kwargs):
        super().__init__(name=f"{network.name}_trainer", **kwargs)
        self.network = network
        self.augmenter = augmenter
        self.flood_level = keras.Variable(0.0, trainable=False, dtype="float32", name="flood_level")
        self.built = True

    def call(self, images, training=False):
        return self.network(images, training=training)

    def train_step(self, data):
        images, masks, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.augmenter is not None:
            out = self.augmenter({"images": images, "segmentation_masks": masks}, training=True)
            images, masks = out["images"], out["segmentation_masks"]
        return super().train_step((images, masks, sample_weight))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training or loss is None:
            return loss
        # Keras divides each replica's batch-mean loss by the replica count; dividing the level
        # alike floods each replica's batch-mean loss: (|L - b| + b) / R = |L/R - b/R| + b/R.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return flooded_gradient_only(loss, self.flood_level / replicas)

    def seed_states(self) -> list:
        """The augmentation RNG states (not part of Keras' weight files), for exact resumption."""
        if self.augmenter is None:
            return []
        return [v for v in self.augmenter.variables if "seed_generator_state" in v.path]
