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
