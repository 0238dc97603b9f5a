import keras
import numpy as np
import pytest

from skinseg.models.complexity import count_params, forward_flops
from skinseg.models.registry import PRESETS, UnknownModelError, build_model, resolve
from skinseg.models.unet import build_unet, level_filters


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
    """Hand count: conv3x3 with bias + BN (4 per channel) per conv; 2x2 transposed conv with
    bias; final 1x1 conv with bias."""
    f = level_filters(width, depth, None)

    def conv(cin, cout):
        return 9 * cin * cout + cout + 4 * cout

    total, cin = 0, 3
    for level in range(depth + 1):
        total += conv(cin, f[level]) + conv(f[level], f[level])
        cin = f[level]
    for level in reversed(range(depth)):
        total += 4 * cin * f[level] + f[level]  # transposed conv
        total += conv(2 * f[level], f[level]) + conv(f[level], f[level])
        cin = f[level]
    return total + cin + 1


@pytest.mark.parametrize(("width", "depth"), [(4, 2), (8, 3)])
def test_unet_parameter_count_matches_hand_count(width, depth):
    assert build_unet(32, width, depth).count_params() == _unet_params(width, depth)


def test_baseline_is_31_million():
    assert count_params(build_model("baseline", 64))["params"] == 31_055_297 == _unet_params(64, 4)


def test_unet_is_the_reference_conv_bias_bn_epsilon_and_reflection_padding():
    model = build_unet(16, 2, 1)
    conv = model.get_layer("enc0_a_conv")
    assert conv.use_bias and conv.padding == "valid"
    assert model.get_layer("enc0_a_bn").epsilon == 1e-5 and model.get_layer("enc0_a_bn").momentum == 0.9
    x = np.random.default_rng(0).random((1, 16, 16, 3)).astype("float32")
    padded = keras.Model(model.input, model.get_layer("enc0_a_pad_cols").output)(x).numpy()
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"))
    zeros = build_unet(16, 2, 1, padding="zeros")
    assert zeros.count_params() == model.count_params() and zeros.get_layer("enc0_a_conv").padding == "same"


def test_deeplab_is_a_complete_resnet_dilated_to_output_stride_16():
    model = build_model("deeplabv3plus", 64, width=8, backbone="resnet50")
    resnet = model.get_layer("resnet50")
    low, high = (tuple(o.shape[1:]) for o in resnet.outputs)
    assert low == (16, 16, 256) and high == (4, 4, 2048)  # the first stage's output; all four stages
    assert resnet.get_layer("conv5_block1_1_conv").strides == (1, 1)
    rates = [resnet.get_layer(f"conv5_block{k}_2_conv").dilation_rate for k in (1, 2, 3)]
    assert rates == [(2, 2), (4, 4), (8, 8)]
    assert resnet.get_layer("conv4_block6_out") is not None  # no mid-stage cut
    # rates capped at the 4x4 map: exact (see the next test)
    assert [model.get_layer(f"aspp_d{r}_conv").dilation_rate for r in (6, 12, 18)] == [(4, 4)] * 3
    bn = resnet.get_layer("conv2_block1_1_bn")
    assert bn.momentum == 0.9
    # As the reference: no dropout, and [0, 1] RGB straight into a ResNet trained from scratch
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert "resnet_preprocess" not in [layer.name for layer in model.layers]
    # with ImageNet weights, their caffe input: a frozen built-in convolution equal to Keras' own
    from skinseg.models.deeplab import caffe_preprocess

    inputs = keras.Input((64, 64, 3))
    pre_model = keras.Model(inputs, caffe_preprocess(inputs))
    x = np.random.default_rng(0).random((1, 64, 64, 3)).astype("float32")
    expected = keras.applications.resnet.preprocess_input(x * 255.0)
    np.testing.assert_allclose(pre_model(x).numpy(), expected, atol=1e-3)
    assert not pre_model.get_layer("resnet_preprocess").trainable


def test_align_corners_resize_equals_tensorflows_and_differs_from_half_pixel():
    """The reference resizes with F.interpolate(align_corners=True); TF1's resize_bilinear with
    align_corners=True is the same sampling."""
    import tensorflow as tf

    from skinseg.models.blocks import resize_align_corners

    x = np.random.default_rng(1).random((2, 5, 7, 3)).astype("float32")
    inputs = keras.Input((5, 7, 3))
    model = keras.Model(inputs, resize_align_corners(inputs, (20, 28), "up"))
    ours = model(x).numpy()
    theirs = tf.compat.v1.image.resize_bilinear(x, (20, 28), align_corners=True).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(ours[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], atol=1e-6)
    half_pixel = keras.layers.UpSampling2D(4, interpolation="bilinear")(x).numpy()
    assert np.abs(half_pixel - ours).mean() > 0.01
    assert model.count_params() == 5 * 20 + 7 * 28 and not model.trainable_weights


def test_a_rate_beyond_the_map_reads_only_the_centre_tap():
    """Why ASPP's rates may be capped at the map's size: at rates 8, 12 and 18 on an 8x8 map a
    3x3 'same' convolution gives the same outputs (its 1x1 centre tap) and the same gradients;
    below the size (rate 6) it does not."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 8, 5)).astype("float32"))
    kernel = np.random.default_rng(1).normal(size=(3, 3, 5, 4)).astype("float32")

    def run(rate):
        conv = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=rate, use_bias=False)
        conv.build(x.shape)
        conv.set_weights([kernel])
        with tf.GradientTape() as tape:
            y = conv(x)
            loss = tf.reduce_sum(y**2)
        return y.numpy(), tape.gradient(loss, conv.kernel).numpy()

    centre = tf.nn.conv2d(x, kernel[1:2, 1:2], 1, "SAME").numpy()
    for rate in (8, 12, 18):
        y, grad = run(rate)
        np.testing.assert_allclose(y, centre, atol=1e-5)
        np.testing.assert_allclose(grad, run(8)[1], atol=1e-4)
        assert not grad[[0, 0, 2, 2], [0, 2, 0, 2]].any()  # the corner taps never see the image
    assert np.abs(run(6)[0] - centre).max() > 0.1


def test_hardnet_stem_pads_symmetrically_as_pytorch():
    """The stride-2 stem convolution, computed in NumPy with one pixel of zeros on every side
    (PyTorch's padding=1), then the symmetric 3x3 stride-2 max-pool."""
    model = build_model("hardnet_mseg", 32, width=4)
    encoder = model.get_layer("hardnet68")
    conv = encoder.get_layer("base0_conv")
    kernel = conv.get_weights()[0]  # (3, 3, 3, 32)
    x = np.random.default_rng(0).random((1, 32, 32, 3)).astype("float32")
    stem = keras.Model(
        encoder.input, [encoder.get_layer("base0_conv").output, encoder.get_layer("base2_pool").output]
    )
    out, pooled = (t.numpy() for t in stem(x))
    padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
    expected = np.zeros((16, 16, 32), "float32")
    for i in range(16):
        for j in range(16):
            patch = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
            expected[i, j] = np.tensordot(patch, kernel, axes=([0, 1, 2], [0, 1, 2]))
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
    before_pool = keras.Model(encoder.input, encoder.get_layer("base1_relu6").output)(x).numpy()[0]
    padded = np.pad(before_pool, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    expected = np.stack(
        [[padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1)) for j in range(8)] for i in range(8)]
    )
    np.testing.assert_allclose(pooled[0], expected, atol=1e-6)


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
    from skinseg.models.deeplab import BackboneWeightsError

    with pytest.raises(BackboneWeightsError, match="not found"):
        build_model("deeplabv3plus", 64, backbone_weights=str(tmp_path / "missing.h5"))


def test_imagenet_offline_error_tells_how_to_pass_a_file(monkeypatch, tmp_path):
    from skinseg.models.deeplab import BackboneWeightsError

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", offline)
    with pytest.raises(BackboneWeightsError, match="--backbone-weights /path/to/resnet101"):
        build_model("deeplabv3plus", 64, backbone_weights="imagenet")


# DeepLab and HarDNet take their training step eagerly: tracing their backward graph costs
# 30-60 s on this CPU, and the graph-mode forward pass is still exercised by predict().
ARCHITECTURES = [
    ("baseline", {"width": 4, "depth": 3}, False),
    ("deeper", {"width": 2, "depth": 6, "padding": "zeros"}, False),  # 1x1 at the bottom
    ("deeplabv3plus", {"width": 16, "backbone": "resnet50"}, True),
    ("hardnet_mseg", {"width": 8}, True),
]


@pytest.mark.integration  # a fit and a .keras save/load per architecture (keras-hub marks these large)
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


@pytest.mark.integration  # builds HarDNet68 twice and writes its weights
def test_hardnet68_pytorch_checkpoint_conversion(tmp_path):
    """A state dict laid out as PyTorch's HarDNet68 (OIHW kernels, `base.i.layers.j.conv/norm`)
    converts to encoder weights that HarDNet-MSEG loads, value for value."""
    from skinseg.models.convert import _torch_name, convert_hardnet68
    from skinseg.models.hardnet_mseg import hardnet68_encoder

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


def test_folding_batch_norm_keeps_the_outputs_and_removes_the_layers():
    import keras

    from skinseg.inference.network import fold_batch_norm
    from skinseg.models.registry import build_model

    for name, kwargs in (
        ("baseline", {"width": 4, "depth": 2}),
        ("hardnet_mseg", {"width": 8}),
        ("deeplabv3plus", {"width": 8, "backbone": "resnet50"}),
    ):
        model = build_model(name, 64, **kwargs)
        rng = np.random.default_rng(0)
        for layer in model.layers:  # statistics far from the initial 0/1, so folding matters
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.moving_mean.shape[0]
                layer.moving_mean.assign(rng.normal(0, 0.5, n))
                layer.moving_variance.assign(rng.uniform(0.2, 3.0, n))
                layer.gamma.assign(rng.uniform(0.5, 1.5, n))
                layer.beta.assign(rng.normal(0, 0.3, n))
        folded = fold_batch_norm(model)
        x = rng.random((2, 64, 64, 3)).astype("float32")
        np.testing.assert_allclose(folded(x, training=False), model(x, training=False), atol=2e-5)
        before = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
        after = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
        assert after < before
        if name == "baseline":
            assert after == 0  # every UNet BatchNormalization follows its convolution
