"""Full-size presets: built at 128 px, one forward pass each, parameter counts as the README says.
Slow (minutes, several GB): `python -m pytest -m slow`."""

import keras
import numpy as np
import pytest

from models.registry import build_model

EXPECTED = {
    "baseline": 31_049_409,
    "bigger": 82_193_793,
    "deeper": 133_844_673,
    "bigger_deeper": 184_989_057,
    "slightly_bigger_deeper": 155_724_321,
    "deeplabv3plus": 11_852_097,
    "hardnet_mseg": 17_440_225,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_full_size_preset(name):
    model = build_model(name, 128)
    assert model.count_params() == EXPECTED[name]
    out = model.predict(np.zeros((1, 128, 128, 3), "float32"), verbose=0)
    assert out.shape == (1, 128, 128, 1) and np.isfinite(out).all()
    keras.backend.clear_session()


@pytest.mark.slow
def test_uncapped_slightly_bigger_deeper_is_the_reference_1_12_billion():
    assert build_model("slightly_bigger_deeper", 64, max_filters=None).count_params() == 1_119_843_361
