"""The reference's protocol (`--recipe reference`, `--init reference`, `--mask-step fixed`), checked
against the values read from its code (CreamNuts/Skin-Leison-Segmentation-Homework)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from skinseg.cli.train import build_parser
from skinseg.models.init import initialize
from skinseg.models.registry import build_model
from skinseg.training.config import config_from_args


def _config(*argv, typed=()):
    return config_from_args(build_parser().parse_args(list(argv)), set(typed))


def test_recipe_reference_is_the_reference_protocol():
    config = _config("--recipe", "reference")
    expected = {
        "model": "baseline",  # Unet(3, 1, 64, 4)
        "width": None,
        "max_filters": 0,  # auto: its widths where they fit the memory, else capped loudly
        "image_size": 128,
        "padding": "reflect",  # padding_mode='reflect'
        "init": "reference",  # kaiming_normal_(nonlinearity='relu')
        "batch_size": 32,
        "epochs": 100,
        "optimizer": "adam",
        "lr": 1e-5,
        "epsilon": 1e-8,  # PyTorch's Adam default
        "loss": "bce",  # nn.BCELoss on sigmoid outputs
        "lr_schedule": "none",
        "aug": False,
        "clahe": False,
        "color_constancy": False,
        "flooding": 0.0,
        "ema": 0.0,
        "monitor": "val_loss",  # lowest held-out loss (the reference's test loss)
        "mask_step": "fixed",  # np.round: threshold 0.5, no clean-up
        "mixed_precision": False,
    }
    assert {key: getattr(config, key) for key in expected} == expected
    # A row's own option wins over the recipe; the rest stays the protocol's.
    step = _config("--recipe", "reference", "--lr-schedule", "step", typed=["lr_schedule"])
    assert (step.lr_schedule, step.step_every, step.step_factor, step.lr) == ("step", 30, 0.1, 1e-5)
    flood = _config("--recipe", "reference", "--flooding", "0.1", typed=["flooding"])
    assert (flood.flooding, flood.epochs, flood.batch_size) == (0.1, 100, 32)


def _stats(layer):
    kernel = np.asarray(layer.kernel)
    return kernel.std(), np.asarray(layer.bias) if layer.use_bias else None


def test_reference_init_draws_kaiming_normal_unet_convolutions_and_pytorch_defaults_elsewhere():
    model = initialize(build_model("baseline", 32, width=16, depth=2), "reference", "unet", seed=3)
    conv = model.get_layer("enc1_a_conv")  # 3x3, 16 -> 32 channels: fan_in 144
    std, bias = _stats(conv)
    assert std == pytest.approx(np.sqrt(2 / 144), rel=0.05)
    assert np.abs(bias).max() <= 1 / np.sqrt(144) and np.abs(bias).max() > 0.5 / np.sqrt(144)
    up = model.get_layer("dec1_up")  # ConvTranspose2d(64 -> 32, 2x2): PyTorch's fan_in = 32 * 2 * 2
    kernel = np.asarray(up.kernel)
    assert np.abs(kernel).max() <= 1 / np.sqrt(128) and kernel.std() == pytest.approx(
        1 / np.sqrt(3 * 128), rel=0.05
    )
    again = initialize(build_model("baseline", 32, width=16, depth=2), "reference", "unet", seed=3)
    np.testing.assert_array_equal(np.asarray(again.get_layer("enc1_a_conv").kernel), np.asarray(conv.kernel))
    keras_default = build_model("baseline", 32, width=16, depth=2)
    assert initialize(keras_default, "keras", "unet") is keras_default
    assert not np.asarray(keras_default.get_layer("enc1_a_conv").bias).any()  # Keras: zero biases


def test_reference_init_of_deeplab_is_kaiming_in_the_backbone_and_aspp_only():
    model = initialize(
        build_model("deeplabv3plus", 32, width=8, backbone="resnet50"), "reference", "deeplabv3plus"
    )
    aspp = model.get_layer("aspp_1x1_conv")
    fan_in = int(np.prod(aspp.kernel.shape[:3]))
    assert np.asarray(aspp.kernel).std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.05)
    decoder = model.get_layer("decoder_a_conv")  # not initialised by the reference: PyTorch's default
    fan_in = int(np.prod(decoder.kernel.shape[:3]))
    assert np.abs(np.asarray(decoder.kernel)).max() <= 1 / np.sqrt(fan_in)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    conv = next(
        layer
        for layer in backbone.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[0] == 3
    )
    fan_in = int(np.prod(conv.kernel.shape[:3]))
    assert np.asarray(conv.kernel).std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.1)


def test_unet_parameters_are_counted_without_building_the_network():
    from skinseg.models.unet import level_filters
    from skinseg.training.estimate import unet_parameters

    for width, depth, cap in ((4, 2, None), (8, 3, None), (8, 4, 32)):
        built = build_model("baseline", 32, width=width, depth=depth, max_filters=cap).count_params()
        assert unet_parameters(level_filters(width, depth, cap)) == built
    # the reference's networks (models_full checks the built counts)
    assert unet_parameters(level_filters(96, 6, None)) == 1_119_879_841
    assert unet_parameters(level_filters(128, 6, None)) == 1_990_812_545


def test_the_reference_widths_are_used_when_they_fit_and_capped_loudly_when_they_do_not(caplog):
    from skinseg.training.config import ConfigError, RunConfig
    from skinseg.training.estimate import fit_capacity
    from skinseg.training.run import settle_capacity

    gpu = (141 * 2**30, "GPU memory")
    fits = fit_capacity(96, 6, 0, 128, 32, "adam", False, memory=gpu)
    assert fits["max_filters"] is None and not fits["capped"] and fits["parameters"] == 1_119_879_841
    host = (24 * 2**30, "available host memory")
    capped = fit_capacity(96, 6, 0, 128, 32, "adam", False, memory=host)
    assert capped["capped"] and capped["estimated_gib"] <= capped["budget_gib"] < capped["reference_gib"]
    assert capped["max_filters"] in (96 * 2**k for k in range(7)) and capped["parameters"] < 1_119_879_841
    assert fit_capacity(96, 6, 512, 128, 32, "adam", False, memory=host)["max_filters"] == 512
    with pytest.raises(
        ConfigError, match=r"--max-filters none: the reference's widths \(1,119,879,841 parameters\)"
    ):
        fit_capacity(96, 6, None, 128, 32, "adam", False, memory=host)
    # settle_capacity: the design's own command on this machine size, said loudly and recorded
    import skinseg.training.estimate as estimate

    original = estimate.device_memory
    estimate.device_memory = lambda: host
    try:
        config = settle_capacity(RunConfig(model="slightly_bigger_deeper", aug=True, batch_size=32))
    finally:
        estimate.device_memory = original
    assert config.max_filters == capped["max_filters"] and config.capacity["capped"]
    assert "1,119,879,841 parameters" in caplog.text and "--max-filters none insists" in caplog.text
    assert settle_capacity(RunConfig(model="hardnet_mseg")).max_filters is None  # not a UNet: no cap


@pytest.mark.integration
def test_a_reference_row_trains_and_records_what_predict_needs(tmp_path, simple_dataset):
    """`--recipe reference --aug --aug-policy reference` end to end at a tiny width: the run
    records the protocol, the fixed mask step and the CLAHE its images get outside training."""
    import json

    from skinseg.cli import predict, train
    from skinseg.inference.segmenter import Segmenter

    out = tmp_path / "run"
    argv = ["--recipe", "reference", "--aug", "--aug-policy", "reference", "--width", "2", "--depth", "2"]
    argv += ["--image-size", "32", "--epochs", "1", "--batch-size", "4", "--data", simple_dataset]
    assert train.main([*argv, "--out", str(out), "--verbose", "0"]) == 0
    config = json.load(open(out / "config.json"))
    assert (config["init"], config["epsilon"], config["monitor"], config["mask_step"]) == (
        "reference",
        1e-8,
        "val_loss",
        "fixed",
    )
    assert config["clahe"] is True and config["clahe_clip"] == 2.5 and config["capacity"]["capped"] is False
    assert json.load(open(out / "preprocessing.json"))["clahe_clip"] == 2.5
    post = json.load(open(out / "postprocess.json"))
    assert (post["threshold"], post["largest_component"], post["fill_holes"]) == (0.5, False, False)
    segmenter = Segmenter.from_run(str(out))
    assert segmenter.preprocessing.clahe and segmenter.preprocessing.clahe_clip == 2.5
    images = tmp_path / "data" / "testing" / "image"
    assert predict.main(["--model", str(out), str(images), "--out", str(tmp_path / "masks")]) == 0


def test_reference_policy_settings_that_conflict_or_were_typed():
    from skinseg.training.config import ConfigError, RunConfig

    assert RunConfig(aug=True, aug_policy="reference").clahe_clip == 2.5
    assert RunConfig(aug=True, aug_policy="reference", clahe_clip=3.0).clahe_clip == 3.0  # typed: kept
    with pytest.raises(ConfigError, match="would overwrite --backbone-weights imagenet"):
        RunConfig(model="deeplabv3plus", init="reference", backbone_weights="imagenet")
