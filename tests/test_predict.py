import os

import numpy as np
import pytest
from PIL import Image

import predict
from models.registry import build_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "best.keras")
    build_model("baseline", 32, width=4, depth=2).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    from tests.conftest import write_pairs

    folder = tmp_path / "in"
    write_pairs(folder, tmp_path / "masks", ["a", "b", "c"], size=(50, 70))
    return folder


def test_masks_at_original_size_with_same_stem(model_path, images, tmp_path):
    out = tmp_path / "out"
    stats = predict.predict_folder(model_path, [str(images)], str(out), overlay=True, batch_size=2)
    assert stats["written"] == 3 and stats["failed"] == 0
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png", "overlays"]
    mask = np.asarray(Image.open(out / "a.png"))
    assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 255}
    assert sorted(os.listdir(out / "overlays")) == ["a.jpg", "b.jpg", "c.jpg"]


def test_existing_masks_are_never_overwritten_unless_asked(model_path, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.full((5, 5), 7, np.uint8)).save(out / "a.png")
    stats = predict.predict_folder(model_path, [str(images)], str(out))
    assert (stats["written"], stats["skipped_existing"], stats["failed"]) == (2, 1, 0)
    assert np.asarray(Image.open(out / "a.png")).max() == 7
    predict.predict_folder(model_path, [str(images)], str(out), overwrite=True)
    assert np.asarray(Image.open(out / "a.png")).shape == (50, 70)


def test_unreadable_input_is_reported_and_skipped_or_stops_with_strict(model_path, images, tmp_path, capsys):
    (images / "b.jpg").write_bytes(b"")  # zero bytes
    out = tmp_path / "out"
    code = predict.main(["--model", model_path, str(images), "--out", str(out), "--batch-size", "1"])
    assert code == 1  # some inputs could not be read; the others were written
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]
    assert "b.jpg: empty file (0 bytes)" in capsys.readouterr().err
    code = predict.main(["--model", model_path, str(images), "--out", str(tmp_path / "o2"), "--strict"])
    assert code == 2 and "b.jpg: empty file" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert (
        predict.main(["--model", str(tmp_path / "nope.keras"), str(tmp_path), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "nope.keras: no such model file" in capsys.readouterr().err


def test_export_savedmodel_and_tflite_give_the_same_masks(model_path, tmp_path):
    import keras
    import tensorflow as tf

    paths = predict.export(model_path, str(tmp_path / "exported"))
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    reference = keras.models.load_model(model_path).predict(x, verbose=0)
    saved = tf.saved_model.load(paths["saved_model"])
    from_saved = saved.serve(tf.constant(x)).numpy()
    interpreter = tf.lite.Interpreter(model_path=paths["tflite"])
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    from_tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(from_saved, reference, atol=1e-5)
    np.testing.assert_allclose(from_tflite, reference, atol=1e-4)
    for other in (from_saved, from_tflite):
        disagree = ((other > 0.5) != (reference > 0.5)) & (np.abs(reference - 0.5) > 1e-3)
        assert not disagree.any()
