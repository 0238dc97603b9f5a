"""A saved model is what predict.py applies: `keras.models.load_model(path)` in a process that
imports only Keras gives the Segmenter's probabilities (no TTA) on the image resized outside the
file, for every preprocessing option; CLAHE, which has no portable form, is the one step the
caller applies first (inference.portable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from skinseg.core.atomic import write_json
from skinseg.data_pipeline.image_io import read_image, resize_image
from skinseg.data_pipeline.preprocess import Preprocessing, clahe
from skinseg.data_pipeline.synthetic import synthetic_pair
from skinseg.inference.description import PRETRAINED
from skinseg.inference.portable import has_colour_constancy, inner_network, portable_model
from skinseg.inference.segmenter import Segmenter
from skinseg.models.registry import build_model
from tests.conftest import TINY_RUN, make_simple

# Every preprocessing a run can be trained with (training.config: --clahe, --color-constancy, --fit).
OPTIONS = {
    "resize only": Preprocessing(),
    "colour constancy": Preprocessing(color_constancy=True),
    "fit pad": Preprocessing(fit="pad"),
    "colour constancy + pad": Preprocessing(color_constancy=True, fit="pad"),
    "CLAHE": Preprocessing(clahe=True, clahe_clip=2.5),
    "CLAHE + colour constancy": Preprocessing(clahe=True, color_constancy=True),
    "CLAHE + colour constancy + pad": Preprocessing(clahe=True, color_constancy=True, fit="pad"),
}

PLAIN_KERAS = """
import sys
import numpy as np
import keras
for model_path, inputs, outputs in zip(*[iter(sys.argv[1:])] * 3):
    model = keras.models.load_model(model_path)  # the obvious call: safe mode, no custom objects
    np.save(outputs, np.asarray(model(np.load(inputs)))[..., 0])
leaked = sorted(m for m in sys.modules if m.split(".")[0] == "skinseg")
print("skinseg modules:", leaked)
"""


def plain_keras(jobs: list[tuple[str, np.ndarray]], tmp_path) -> list[np.ndarray]:
    """Each (model file, inputs) applied by one process that imports Keras and NumPy only."""
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_KERAS)
    args = []
    for k, (model_path, inputs) in enumerate(jobs):
        np.save(tmp_path / f"in{k}.npy", inputs)
        args += [model_path, str(tmp_path / f"in{k}.npy"), str(tmp_path / f"out{k}.npy")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skinseg modules: []" in done.stdout
    return [np.load(tmp_path / f"out{k}.npy") for k in range(len(jobs))]


def outside_the_file(image: np.ndarray, size, spec: Preprocessing) -> np.ndarray:
    """What the caller does before the file: resize/fit, and CLAHE when the model was trained with it."""
    x = resize_image(image, size, spec.fit)
    if spec.clahe:
        x = clahe(x, spec.clahe_clip)
    return x.astype(np.float32) / 255.0


def _images():
    rng = np.random.default_rng(3)
    images = []
    for k, (h, w) in enumerate(((48, 64), (70, 40))):
        image, _ = synthetic_pair(5, k, (h, w))
        # a colour cast colour constancy has to undo
        cast = np.clip(image.astype(np.float32) * rng.uniform(0.5, 1.2, 3), 0, 255).astype(np.uint8)
        images.append(cast)
    return images


def test_saved_models_loaded_by_plain_keras_give_predicts_probabilities_for_every_option(tmp_path):
    images = _images()
    jobs, expected = [], []
    for k, (name, spec) in enumerate(OPTIONS.items()):
        folder = tmp_path / f"option{k}"
        folder.mkdir()
        network = build_model("baseline", 32, width=4, depth=2)
        network.set_weights(
            [
                w + np.float32(0.05) * np.sin(np.arange(w.size, dtype=np.float32)).reshape(w.shape)
                for w in network.get_weights()
            ]
        )
        path = str(folder / "best.keras")
        portable_model(network, spec).save(path)  # as training saves it (training.callbacks.RunRecorder)
        write_json(str(folder / "preprocessing.json"), spec.to_json())
        segmenter = Segmenter.from_file(path)
        assert has_colour_constancy(segmenter.network) == spec.color_constancy, name
        expected.append(np.stack([segmenter.predict(image).at_input for image in images]))
        jobs.append((path, np.stack([outside_the_file(image, (32, 32), spec) for image in images])))
        # the colour constancy inside is the one the Segmenter applies to a bare network
        bare = Segmenter(inner_network(segmenter.network), spec)
        np.testing.assert_allclose(
            np.stack([bare.predict(image).at_input for image in images]),
            expected[-1],
            atol=2e-3,
            err_msg=name,
        )
    with open(os.path.join(os.path.dirname(PRETRAINED), "preprocessing.json"), encoding="utf-8") as handle:
        shipped = Preprocessing.from_json(json.load(handle))
    segmenter = Segmenter.from_pretrained()
    expected.append(np.stack([segmenter.predict(image).at_input for image in images]))
    jobs.append(
        (PRETRAINED, np.stack([outside_the_file(image, segmenter.input_size, shipped) for image in images]))
    )
    names = [*OPTIONS, "the shipped model"]
    for name, got, want in zip(names, plain_keras(jobs, tmp_path), expected):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)


@pytest.mark.integration
def test_a_trained_runs_best_keras_is_self_contained(tmp_path):
    from skinseg.training.config import RunConfig
    from skinseg.training.run import run_training

    data = tmp_path / "data"
    make_simple(str(data), n_train=10, n_test=2)
    config = RunConfig(data=str(data), out=str(tmp_path / "run"), color_constancy=True, **TINY_RUN)
    run_training(config, verbose=0)
    best = str(tmp_path / "run" / "best.keras")
    segmenter = Segmenter.from_run(str(tmp_path / "run"))
    assert has_colour_constancy(segmenter.network)
    image = read_image(str(next((data / "testing" / "image").iterdir()))).array
    expected = segmenter.predict(image).at_input[None]
    [got] = plain_keras([(best, outside_the_file(image, (32, 32), config.preprocessing)[None])], tmp_path)
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.integration
def test_a_clahe_runs_files_say_by_their_name_what_they_need(tmp_path):
    from skinseg.training.config import RunConfig
    from skinseg.training.run import run_training

    data = tmp_path / "data"
    make_simple(str(data), n_train=10, n_test=2)
    run = tmp_path / "run"
    config = RunConfig(data=str(data), out=str(run), clahe=True, color_constancy=True, **TINY_RUN)
    run_training(config, verbose=0)
    names = sorted(os.listdir(run))
    assert "best.needs-clahe.keras" in names and "last.needs-clahe.keras" in names
    assert "best.keras" not in names and "last.keras" not in names
    segmenter = Segmenter.from_run(str(run))  # the Segmenter applies the CLAHE the file lacks
    image = read_image(str(next((data / "testing" / "image").iterdir()))).array
    expected = segmenter.predict(image).at_input[None]
    [got] = plain_keras(
        [
            (
                str(run / "best.needs-clahe.keras"),
                outside_the_file(image, (32, 32), config.preprocessing)[None],
            )
        ],
        tmp_path,
    )
    np.testing.assert_allclose(got, expected, atol=1e-4)
