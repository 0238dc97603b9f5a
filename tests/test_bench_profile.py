"""bench.profile's bookkeeping: FLOPs by hand, nested models walked, shares that add up."""

import keras
import pytest

from bench.profile import _conv_flops, _groups, _kind, _leaf_layers


def _model():
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_in, keras.layers.Conv2D(6, 3, padding="same", dilation_rate=2, name="d")(inner_in)
    )
    x_in = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="s")(x_in)
    x = inner(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2, name="t")(x)
    x = keras.layers.DepthwiseConv2D((1, 5), padding="same", name="dw")(x)
    return keras.Model(x_in, x)


def test_convolution_flops_by_hand_and_nested_layers_walked():
    layers = {layer.name: layer for layer, _ in _leaf_layers(_model())}
    assert list(layers) == ["s", "d", "t", "dw"]  # the nested model's conv, not the model
    assert _conv_flops(layers["s"], 2) == 2 * 8 * 8 * 4 * (2 * 3 * 3 * 3)
    assert _conv_flops(layers["d"], 1) == 8 * 8 * 6 * (2 * 3 * 3 * 4)  # dilation adds no work
    assert _conv_flops(layers["t"], 1) == 2 * 8 * 8 * 6 * 2 * 2 * 2  # per input pixel
    assert _conv_flops(layers["dw"], 1) == 16 * 16 * 2 * (2 * 1 * 5)
    assert [_kind(layers[n]) for n in ("s", "d", "t", "dw")] == [
        "Conv 3x3 s2",
        "Conv 3x3 d2",
        "ConvTranspose 2x2 s2",
        "DepthwiseConv 1x5",
    ]


def test_groups_shares_add_up_and_sort_by_time():
    rows = [
        {"kind": "a", "seconds": 1.0, "flops": 3e9},
        {"kind": "b", "seconds": 3.0},
        {"kind": "a", "seconds": 1.0, "flops": 1e9},
    ]
    groups = _groups(rows, lambda r: r["kind"])
    assert [g["group"] for g in groups] == ["b", "a"]
    assert sum(g["time_share"] for g in groups) == pytest.approx(1.0)
    assert groups[1]["flop_share"] == 1.0 and groups[1]["GFLOPs"] == pytest.approx(2.0)
    assert groups[0]["GFLOPs"] is None and groups[1]["layers"] == 2
