import keras
import pytest

from skinseg.training.callbacks import Flooding, learning_rate, schedule_callbacks
from skinseg.training.config import RunConfig
from skinseg.training.trainer import DiceScore, SegmentationTrainer


def test_step_schedule_is_x01_every_30_epochs():
    (callback,) = schedule_callbacks(RunConfig(lr=1e-3, lr_schedule="step"))
    assert [callback.schedule(e) for e in (0, 29, 30, 59, 60)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]
    )


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    schedule = learning_rate(RunConfig(lr=1e-3, lr_schedule="cosine", epochs=10, warmup_epochs=2), 5)
    values = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert values[0] == pytest.approx(1e-5)
    assert values[1] == pytest.approx((1e-5 + 1e-3) / 2, rel=1e-3)
    assert values[2] == pytest.approx(1e-3)
    assert values[3] == pytest.approx(
        1e-3 * 0.5 * (1 + __import__("math").cos(__import__("math").pi * 20 / 40)), rel=1e-3
    )
    assert values[4] == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(RunConfig(lr=3e-4), 5) == 3e-4


def test_plateau_and_none():
    (callback,) = schedule_callbacks(RunConfig(lr_schedule="plateau", plateau_patience=3))
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau) and callback.patience == 3
    assert schedule_callbacks(RunConfig()) == []


def test_flooding_callback_switches_on_at_its_epoch():
    trainer = SegmentationTrainer(keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(1, 1)]))
    callback = Flooding(0.2, start=3)
    callback.set_model(trainer)
    callback.on_epoch_begin(2)
    assert float(trainer.flood_level) == 0.0
    callback.on_epoch_begin(3)
    assert float(trainer.flood_level) == pytest.approx(0.2)


def test_dice_score_per_image_with_empty_masks():
    metric = DiceScore()
    y = keras.ops.convert_to_tensor([[[[1.0], [0.0]]], [[[0.0], [0.0]]]])
    p = keras.ops.convert_to_tensor([[[[0.9], [0.8]]], [[[0.1], [0.2]]]])
    metric.update_state(y, p)
    assert float(metric.result()) == pytest.approx((2 * 1 / 3 + 1.0) / 2)  # 2/3, and 1 for empty/empty


def test_replica_local_validation_gives_what_keras_evaluate_gives_on_an_uneven_split():
    """7 validation images in batches of 3 (3, 3, 1): the callback's val_loss and val_dice equal
    Keras' own evaluate in one process, and with no strategy nothing is all-reduced."""
    import numpy as np
    import tensorflow as tf

    from skinseg.losses import get_loss
    from skinseg.models.registry import build_model
    from skinseg.training.callbacks import ReplicaLocalValidation

    rng = np.random.default_rng(0)
    images = rng.random((7, 32, 32, 3)).astype("float32")
    masks = (rng.random((7, 32, 32, 1)) > 0.6).astype("float32")
    packed = tf.data.Dataset.from_tensor_slices(np.concatenate([images, masks], -1)).batch(3)
    trainer = SegmentationTrainer(build_model("baseline", 32, width=2, depth=1))
    trainer.compile(optimizer="adam", loss=get_loss("bce_dice"), metrics=[DiceScore()])
    expected = trainer.evaluate(packed, verbose=0, return_dict=True)
    callback = ReplicaLocalValidation(packed, [DiceScore()])
    callback.set_model(trainer)
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert logs["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert logs["val_dice"] == pytest.approx(expected["dice"], abs=1e-6)
    assert logs["loss"] == 1.0
    assert callback._agreed([0.25, 0.5]) == [0.25, 0.5]
