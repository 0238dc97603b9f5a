import keras
import numpy as np
import pytest

from models.complexity import count_params, forward_flops
from models.registry import PRESETS, UnknownModelError, build_model, resolve
from models.unet import build_unet, level_filters


def test_registry_names_aliases_and_error():
    assert set(PRESETS) == {
        "baseline",
        "bigger",
        "deeper",
        "bigger_deeper",
        "slightly_bigger_deeper",
        "deeplabv3plus",
        "hardnet_mseg",
    }
    assert resolve("unet").name == "baseline" and resolve("Baseline").name == "baseline"
    with pytest.raises(UnknownModelError) as err:
        resolve("segformer")
    for name in ("baseline", "slightly_bigger_deeper", "deeplabv3plus", "hardnet_mseg", "unet"):
        assert name in str(err.value)


def test_presets_keep_the_reference_geometry():
    geometry = {n: (p.width, p.depth) for n, p in PRESETS.items() if p.family == "unet"}
    assert geometry == {
        "baseline": (64, 4),
        "bigger": (128, 4),
        "deeper": (64, 6),
        "bigger_deeper": (128, 6),
        "slightly_bigger_deeper": (96, 6),
    }


def test_level_filters_double_and_cap():
    assert level_filters(64, 4, 1024) == [64, 128, 256, 512, 1024]
    assert level_filters(96, 6, 1024) == [96, 192, 384, 768, 1024, 1024, 1024]
    assert level_filters(96, 6, None) == [96, 192, 384, 768, 1536, 3072, 6144]


def _unet_params(width, depth):
    """Hand count: conv3x3 without bias + BN (4 per channel) per conv; 2x2 transposed conv with
    bias; final 1x1 conv with bias."""
    f = level_filters(width, depth, None)
    total, cin = 0, 3
    for level in range(depth + 1):
        total += 9 * cin * f[level] + 4 * f[level] + 9 * f[level] * f[level] + 4 * f[level]
        cin = f[level]
    for level in reversed(range(depth)):
        total += 4 * cin * f[level] + f[level]  # transposed conv
        total += 9 * 2 * f[level] * f[level] + 4 * f[level] + 9 * f[level] * f[level] + 4 * f[level]
        cin = f[level]
    return total + cin + 1


@pytest.mark.parametrize(("width", "depth"), [(4, 2), (8, 3)])
def test_unet_parameter_count_matches_hand_count(width, depth):
    assert build_unet(32, width, depth).count_params() == _unet_params(width, depth)


def test_baseline_is_31_million():
    assert count_params(build_model("baseline", 64))["params"] == 31_049_409 == _unet_params(64, 4)


def test_hardnet_mseg_matches_the_reference_parameter_count():
    model = build_model("hardnet_mseg", 64)
    assert count_params(model)["trainable_params"] == 17_423_837
    encoder = model.get_layer("hardnet68")
    assert [tuple(o.shape[1:]) for o in encoder.outputs] == [
        (16, 16, 128),
        (8, 8, 320),
        (4, 4, 640),
        (2, 2, 1024),
    ]


def test_size_must_divide():
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth = 16"):
        build_unet(40, 4, 4)
    with pytest.raises(ValueError, match="divisible by 32"):
        build_model("hardnet_mseg", 48)


def test_forward_flops_match_hand_count():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    outputs = keras.layers.Conv2DTranspose(2, 2, strides=2, use_bias=False)(x)
    model = keras.Model(inputs, outputs)
    assert forward_flops(model) == 2 * 8 * 8 * 27 * 4 + 2 * 8 * 8 * 4 * 2 * 4


def test_unknown_backbone_weights_file_is_a_clear_error(tmp_path):
    from models.deeplab import BackboneWeightsError

    with pytest.raises(BackboneWeightsError, match="not found"):
        build_model("deeplabv3plus", 64, backbone_weights=str(tmp_path / "missing.h5"))


def test_imagenet_offline_error_tells_how_to_pass_a_file(monkeypatch, tmp_path):
    from models.deeplab import BackboneWeightsError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", offline)
    with pytest.raises(BackboneWeightsError, match="--backbone-weights /path/to/resnet50"):
        build_model("deeplabv3plus", 64, backbone_weights="imagenet")


# DeepLab and HarDNet take their training step eagerly: tracing their backward graph costs
# 30-60 s on this CPU, and the graph-mode forward pass is still exercised by predict().
ARCHITECTURES = [
    ("baseline", {"width": 4, "depth": 3}, False),
    ("deeper", {"width": 2, "depth": 6}, False),
    ("deeplabv3plus", {"width": 16}, True),
    ("hardnet_mseg", {"width": 8}, True),
]


@pytest.mark.parametrize(("name", "overrides", "eager"), ARCHITECTURES)
def test_forward_train_step_and_keras_round_trip(name, overrides, eager, tmp_path):
    model = build_model(name, 64, **overrides)
    assert all(layer.name for layer in model.layers)
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
    y = (np.random.default_rng(1).random((2, 64, 64, 1)) > 0.5).astype("float32")
    pred = model.predict(x, verbose=0)
    assert pred.shape == (2, 64, 64, 1) and pred.dtype == np.float32
    assert pred.min() >= 0 and pred.max() <= 1
    model.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=eager)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_mixed_precision_keeps_a_float32_sigmoid():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("baseline", 32, width=4, depth=2)
        assert model.get_layer("enc0_a_conv").compute_dtype == "float16"
        assert model.get_layer("mask").compute_dtype == "float32"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_shades_of_gray_removes_a_colour_cast_and_keeps_neutral_images():
    from models.blocks import ShadesOfGray

    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.6, (1, 16, 16, 1)).repeat(3, axis=-1).astype("float32")  # grey world
    layer = ShadesOfGray()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(scene)), scene, atol=1e-5)
    cast = scene * np.array([0.6, 0.8, 1.0], "float32")  # a blue-tinted illuminant
    corrected = keras.ops.convert_to_numpy(layer(cast))
    np.testing.assert_allclose(corrected[..., 0], corrected[..., 2], rtol=1e-4)  # neutral again
    assert corrected.min() >= 0 and corrected.max() <= 1


def test_colour_constancy_travels_with_the_saved_model(tmp_path):
    model = build_model("baseline", 32, width=2, depth=1, color_constancy=True)
    assert model.layers[1].name == "color_constancy"
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(1).random((1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_hardnet68_pytorch_checkpoint_conversion(tmp_path):
    """A state dict laid out as PyTorch's HarDNet68 (OIHW kernels, `base.i.layers.j.conv/norm`)
    converts to encoder weights that HarDNet-MSEG loads, value for value."""
    from models.convert import _torch_name, convert_hardnet68
    from models.hardnet_mseg import hardnet68_encoder

    source = hardnet68_encoder((64, 64))
    rng = np.random.default_rng(0)
    state = {}
    for layer in source.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = rng.normal(size=layer.kernel.shape).astype("float32")
            state[f"module.{_torch_name(layer.name[:-5])}.conv.weight"] = kernel.transpose(3, 2, 0, 1)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for key in ("weight", "bias", "running_mean", "running_var"):
                state[f"module.{_torch_name(layer.name[:-3])}.norm.{key}"] = rng.uniform(
                    0.5, 1.5, layer.gamma.shape
                ).astype("float32")
    state["module.base.16.3.weight"] = np.zeros((1000, 1024), "float32")  # the classifier, ignored
    np.savez(tmp_path / "hardnet68.npz", **state)
    convert_hardnet68(str(tmp_path / "hardnet68.npz"), str(tmp_path / "enc.weights.h5"))
    model = build_model("hardnet_mseg", 64, backbone_weights=str(tmp_path / "enc.weights.h5"))
    encoder = model.get_layer("hardnet68")
    conv = encoder.get_layer("base3_layer5_conv")
    np.testing.assert_array_equal(
        conv.kernel.numpy(), state["module.base.3.layers.5.conv.weight"].transpose(2, 3, 1, 0)
    )
    bn = encoder.get_layer("base15_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["module.base.15.norm.running_var"])
