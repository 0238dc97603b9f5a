"""Full-size presets: built at 128 px, one forward pass each, parameter counts as the README says.
Slow (minutes, several GB): `python -m pytest -m slow`."""

import keras
import numpy as np
import pytest

from skinseg.models.registry import build_model

EXPECTED = {  # capped at 1024 channels by default, as the README's table says
    "baseline": 31_055_297,
    "bigger": 82_203_521,
    "deeper": 133_858_753,
    "bigger_deeper": 185_006_977,
    "slightly_bigger_deeper": 155_740_321,
    "deeplabv3plus": 59_510_081,  # ResNet-101, 59,391,841 trainable (+ the frozen align-corners resizes)
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
def test_uncapped_presets_are_the_reference_widths():
    assert build_model("bigger", 64, max_filters=None).count_params() == 124_156_801
    assert build_model("deeper", 128, max_filters=None).count_params() == 497_766_849
    assert build_model("slightly_bigger_deeper", 128, max_filters=None).count_params() == 1_119_879_841
