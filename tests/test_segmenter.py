"""The Segmenter: the one path from an image to its mask, and the Python API."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from skinseg import Segmenter
from skinseg.core.errors import SkinsegError
from skinseg.data_pipeline.preprocess import Preprocessing, prepare_image, shades_of_gray
from skinseg.inference.description import PredictError, describe
from skinseg.inference.postprocess import PostProcessing
from skinseg.inference.predict_folder import predict_folder


def _brightness_network(size=(16, 16)) -> keras.Model:
    """A segmenter whose probability is the input's mean over channels: the lesion is where the
    image is bright, so every expected mask can be worked out by hand."""
    inputs = keras.Input((*size, 3))
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="mean")
    outputs = conv(inputs)
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.full((1, 1, 3, 1), 1.0 / 3, "float32")])
    return model


def _square_image(h=40, w=60, box=(10, 30, 15, 45)) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((h, w, 3), np.uint8)
    top, bottom, left, right = box
    image[top:bottom, left:right] = 255
    truth = np.zeros((h, w), bool)
    truth[top:bottom, left:right] = True
    return image, truth


def test_segment_returns_the_mask_at_the_image_size_with_its_probabilities():
    image, truth = _square_image()
    segmenter = Segmenter(_brightness_network())
    mask, prob = segmenter.segment(image, probabilities=True)
    assert mask.shape == prob.shape == (40, 60) and mask.dtype == bool and prob.dtype == np.float32
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.95  # a 16 px round trip of a 20x30 box
    assert prob.max() <= 1.0 and prob[0, 0] == 0.0 and prob[20, 30] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(segmenter.segment(image), mask)


def test_the_mask_step_and_tta_are_the_segmenters():
    image, _ = _square_image()
    plain = Segmenter(_brightness_network())
    never = plain.with_options(post=PostProcessing(threshold=1.0))  # nothing is above 1.0
    assert not never.segment(image).any() and plain.segment(image).any()
    assert never._forward is plain._forward  # the same traced network
    # The network is symmetric under flips, so TTA changes nothing here but must run the flips.
    calls = []
    tta = plain.with_options(tta=True)
    forward = tta._forward
    tta._forward = lambda x: calls.append(x.shape) or forward(x)
    np.testing.assert_allclose(
        tta.predict(image).probabilities, plain.predict(image).probabilities, atol=1e-6
    )
    assert len(calls) == 4


def test_preprocessing_is_applied_before_the_network():
    rng = np.random.default_rng(0)
    image = (rng.random((30, 20, 3)) * np.array([0.4, 0.7, 1.0]) * 255).astype(np.uint8)
    segmenter = Segmenter(_brightness_network(), Preprocessing(color_constancy=True))
    expected = prepare_image(image, (16, 16), Preprocessing(color_constancy=True))
    np.testing.assert_array_equal(segmenter.prepare(image), expected)
    assert not np.array_equal(expected, prepare_image(image, (16, 16)))
    at_input = segmenter.predict(image).at_input
    np.testing.assert_allclose(at_input, expected.astype(np.float32).mean(-1) / 255, atol=1e-5)
    assert np.array_equal(shades_of_gray(prepare_image(image, (16, 16))), expected)


def test_a_file_path_is_read_as_a_viewer_shows_it(tmp_path):
    image, truth = _square_image()
    Image.fromarray(image).save(tmp_path / "x.png")
    mask = Segmenter(_brightness_network()).segment(tmp_path / "x.png")
    assert mask.shape == (40, 60) and 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.95


def test_wrong_inputs_are_refused_with_the_reason():
    segmenter = Segmenter(_brightness_network())
    with pytest.raises(PredictError, match="uint8 RGB array"):
        segmenter.segment(np.zeros((10, 10), np.uint8))
    with pytest.raises(PredictError, match="uint8 RGB array"):
        segmenter.segment(np.zeros((10, 10, 3), np.float32))
    assert issubclass(PredictError, SkinsegError)


def test_a_saved_model_is_described_by_the_files_beside_it(tmp_path):
    """One rule for a run folder, the shipped model and a plain file: preprocessing.json and
    postprocess.json beside the .keras file; a postprocess.json chosen for another network is
    not used."""
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "net.keras"
    _brightness_network().save(path)
    described = describe(str(path))
    assert described.preprocessing == Preprocessing() and described.post == PostProcessing()
    (folder / "preprocessing.json").write_text(json.dumps({"clahe": False, "color_constancy": True}))
    (folder / "postprocess.json").write_text(json.dumps({"threshold": 0.7, "fill_holes": True}))
    segmenter = Segmenter.from_file(str(path))
    assert segmenter.preprocessing == Preprocessing(color_constancy=True)
    assert (segmenter.post.threshold, segmenter.post.fill_holes) == (0.7, True)
    (folder / "postprocess.json").write_text(json.dumps({"threshold": 0.7, "network_sha256": "0" * 64}))
    assert Segmenter.from_file(str(path)).post == PostProcessing()
    (folder / "preprocessing.json").write_text(json.dumps({"clahe": "false"}))
    with pytest.raises(PredictError, match=r"preprocessing.json: clahe must be true or false"):
        describe(str(path))


def test_predict_folder_writes_what_segment_returns(tmp_path):
    image, _ = _square_image(37, 83, (5, 30, 20, 60))
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "a.png")
    segmenter = Segmenter(_brightness_network())
    result = predict_folder(segmenter, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert result.written == 1
    written = np.asarray(Image.open(tmp_path / "out" / "a.png")) > 0
    np.testing.assert_array_equal(written, segmenter.segment(tmp_path / "in" / "a.png"))


@pytest.mark.integration
def test_the_python_api_from_the_readme_runs_in_a_fresh_process(tmp_path):
    """The README's example, as a notebook user runs it: the shipped model on a photo."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    image, _ = _square_image(90, 120, (30, 60, 40, 80))
    image[image == 0] = 200  # light skin
    image[30:60, 40:80] = (90, 60, 45)  # a dark lesion
    Image.fromarray(image).save(tmp_path / "photo.jpg")
    code = (
        "from skinseg import Segmenter\n"
        "segmenter = Segmenter.from_pretrained()\n"
        f"mask, probabilities = segmenter.segment({str(tmp_path / 'photo.jpg')!r}, probabilities=True)\n"
        "print(mask.shape, mask.dtype, int(mask[45, 60]), int(mask[5, 5]), probabilities.dtype)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(90, 120) bool 1 0 float32"


def _trained_looking(seed: int) -> keras.Model:
    """A small UNet with random weights and BatchNormalization statistics, so folding them into
    the convolutions changes the computation (and an error there shows)."""
    from skinseg.models.registry import build_model

    model = build_model("baseline", 32, width=4, depth=2)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        values = rng.normal(0.0, 0.5, weight.shape).astype("float32")
        if "variance" in weight.path:
            values = np.abs(values) + 0.5
        weight.assign(values)
    return model


def test_an_ensemble_saved_as_one_model_gives_the_mean_of_its_members(tmp_path):
    """Segmenter.ensemble runs one model averaging its members (BatchNormalization folded in
    each); saved, it loads with a plain keras.models.load_model in safe mode, colour constancy
    inside, and gives the mean of the members' own probabilities."""
    from skinseg.inference.portable import ensemble_members, has_colour_constancy, portable_model

    spec = Preprocessing(color_constancy=True)
    members = [Segmenter(portable_model(_trained_looking(seed), spec), spec) for seed in (1, 2, 3)]
    ensemble = Segmenter.ensemble(members)  # folded, as the members are
    rng = np.random.default_rng(0)
    image = (rng.random((45, 61, 3)) * np.array([0.6, 0.9, 1.0]) * 255).astype(np.uint8)
    unfolded = [Segmenter(m.network, spec, fold=False) for m in members]
    by_hand = np.mean([member.predict(image).at_input for member in unfolded], axis=0)
    assert np.ptp(by_hand) > 0.05  # not a constant map
    np.testing.assert_allclose(ensemble.predict(image).at_input, by_hand, atol=2e-5)
    assert ensemble.parameters == sum(member.parameters for member in members)

    path = str(tmp_path / "ensemble.keras")
    ensemble.network.save(path)
    plain = keras.models.load_model(path, safe_mode=True)
    assert has_colour_constancy(plain) and len(ensemble_members(plain)) == 3
    resized = prepare_image(image, (32, 32), Preprocessing())  # the resize alone: the rest is inside
    np.testing.assert_allclose(plain.predict(resized[None] / 255.0, verbose=0)[0, ..., 0], by_hand, atol=2e-5)
    loaded = Segmenter.from_file(path)  # on its own: the file says it applies colour constancy
    assert loaded.preprocessing.color_constancy
    np.testing.assert_allclose(loaded.predict(image).at_input, by_hand, atol=2e-5)
    with pytest.raises(PredictError, match="same input"):
        Segmenter.ensemble([members[0], Segmenter(_brightness_network((32, 32)))])


def test_a_network_twice_or_an_ensemble_inside_another_saves_loads_and_folds(tmp_path):
    """The same network object twice (Keras would save its weights once and fail to load the file)
    gets a copy; an ensemble saved as one model, used as a member of another, is still folded
    member by member; --init-from refuses an ensemble, saying why."""
    from skinseg.inference.network import _folded
    from skinseg.inference.portable import ensemble_members
    from skinseg.training.config import ConfigError
    from skinseg.training.init_from import load_initial_weights

    a, b, c = (Segmenter(_trained_looking(seed)) for seed in (4, 5, 6))
    image = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    twice = Segmenter.ensemble([a, a])
    assert twice.parameters == 2 * a.parameters
    path = str(tmp_path / "twice.keras")
    twice.network.save(path)
    np.testing.assert_allclose(
        Segmenter.from_file(path).predict(image).at_input, a.predict(image).at_input, atol=2e-5
    )

    inner = str(tmp_path / "ab.keras")
    Segmenter.ensemble([a, b]).network.save(inner)
    nested = Segmenter.ensemble([Segmenter.from_file(inner), c])
    expected = (a.predict(image).at_input + b.predict(image).at_input) / 4 + c.predict(image).at_input / 2
    np.testing.assert_allclose(nested.predict(image).at_input, expected, atol=2e-5)
    assert len(ensemble_members(nested.network)) == 2

    def batch_norms(model):
        return sum(
            batch_norms(layer)
            if isinstance(layer, keras.Model)
            else isinstance(layer, keras.layers.BatchNormalization)
            for layer in model.layers
        )

    assert batch_norms(nested.network) > 0 and batch_norms(_folded(nested.network)) == 0

    from skinseg.core.run_folder import file_digest

    with pytest.raises(ConfigError, match="an ensemble of 2 networks saved as one model"):
        load_initial_weights(_trained_looking(7), {"path": inner, "sha256": file_digest(inner)})
