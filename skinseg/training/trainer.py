"""The training wrapper around an inference network: augmentation and flooding live in the
compiled train step only, so the saved network is exactly what inference runs."""

from __future__ import annotations

import keras
import numpy as np
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
    on the device; `flood_level` is a variable so that a callback can move it during training.

    It takes (images, masks) or one packed tensor, images and masks concatenated on the channel
    axis (`data_pipeline.tfdata.make_dataset(pack=True)`, what training feeds it). The packing and
    the (1,)-shaped logs under MultiWorkerMirroredStrategy work around two places where Keras 3's
    `fit` fails with that strategy (keras-team/keras#20585): it all-reduces the first batch as
    one value to build the model (a tuple cannot be), and it reduces each replica's logs along
    axis 0 (a scalar has none)."""

    def __init__(self, network: keras.Model, augmenter: keras.layers.Layer | None = None, **kwargs):
        super().__init__(name=f"{network.name}_trainer", **kwargs)
        self.network = network
        self.augmenter = augmenter
        self.flood_level = keras.Variable(0.0, trainable=False, dtype="float32", name="flood_level")
        self.trace = None  # tests: a function of (step, per-example pixel sums) that records them
        self.built = True

    def call(self, images, training=False):
        return self.network(images[..., :3], training=training)

    @staticmethod
    def _unpack(data):
        if isinstance(data, (tuple, list)):
            return keras.utils.unpack_x_y_sample_weight(data)
        return data[..., :3], data[..., 3:], None

    def _per_replica_logs(self, logs: dict) -> dict:
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            return {key: ops.reshape(value, (1,)) for key, value in logs.items()}
        return logs

    def train_step(self, data):
        images, masks, sample_weight = self._unpack(data)
        if self.trace is not None:
            tf.py_function(self.trace, [self.optimizer.iterations, ops.sum(images, axis=(1, 2, 3))], [])
        if self.augmenter is not None:
            out = self.augmenter({"images": images, "segmentation_masks": masks}, training=True)
            images, masks = out["images"], out["segmentation_masks"]
        return self._per_replica_logs(super().train_step((images, masks, sample_weight)))

    def test_step(self, data):
        return self._per_replica_logs(super().test_step(self._unpack(data)))

    def build_for_fit(self, image_shape) -> None:
        """Build the augmenter, the compiled loss and metrics and the optimizer on a dummy batch,
        so that `fit` never builds them from a real (packed, distributed) one."""
        images = np.zeros((1, *image_shape), "float32")
        masks = np.zeros((*images.shape[:3], 1), "float32")
        if self.augmenter is not None:
            self.augmenter({"images": images, "segmentation_masks": masks}, training=False)
        predictions = self.network(images, training=False)
        self.compute_loss(images, masks, predictions, training=False)
        self.compute_metrics(images, masks, predictions, sample_weight=None)
        for metric in self.metrics:
            metric.reset_state()
        self.optimizer.build(self.trainable_variables)

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
