import os

import numpy as np
import pytest
from PIL import Image

from skinseg.cli import predict
from skinseg.data_pipeline.preprocess import Preprocessing, shades_of_gray
from skinseg.inference.export import export
from skinseg.inference.predict_folder import PredictError, predict_folder
from skinseg.inference.segmenter import Segmenter
from skinseg.models.registry import build_model


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
    result = predict_folder(model_path, [str(images)], str(out), overlay=True, batch_size=2)
    assert result.written == 3 and result.problems == []
    assert _listed(out) == ["a.png", "b.png", "c.png", "overlays"]
    mask = np.asarray(Image.open(out / "a.png"))
    assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 255}
    assert sorted(os.listdir(out / "overlays")) == ["a.jpg", "b.jpg", "c.jpg"]


def test_existing_masks_are_never_overwritten_unless_asked(model_path, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(np.full((5, 5), 7, np.uint8)).save(out / "a.png")
    result = predict_folder(model_path, [str(images)], str(out))
    assert (result.written, result.skipped_existing, result.problems) == (2, 1, [])
    assert np.asarray(Image.open(out / "a.png")).max() == 7
    predict_folder(model_path, [str(images)], str(out), overwrite=True)
    assert np.asarray(Image.open(out / "a.png")).shape == (50, 70)


def test_unreadable_input_is_reported_and_skipped_or_stops_with_strict(model_path, images, tmp_path, capsys):
    (images / "b.jpg").write_bytes(b"")  # zero bytes
    out = tmp_path / "out"
    code = predict.main(["--model", model_path, str(images), "--out", str(out), "--batch-size", "1"])
    assert code == 1  # some inputs could not be read; the others were written
    assert _listed(out) == ["a.png", "c.png"]
    assert "b.jpg: empty file (0 bytes)" in capsys.readouterr().err
    code = predict.main(["--model", model_path, str(images), "--out", str(tmp_path / "o2"), "--strict"])
    assert code == 2 and "b.jpg: empty file" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(images, tmp_path, capsys):
    assert (
        predict.main(["--model", str(tmp_path / "nope.keras"), str(images), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "nope.keras: no such model file" in capsys.readouterr().err


def _tflite(path, x):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.integration  # SavedModel and TFLite conversions
@pytest.mark.parametrize("color_constancy", [False, True])
def test_export_savedmodel_and_tflite_give_the_same_masks(model_path, tmp_path, color_constancy):
    """The exports take raw images: with colour constancy, they must equal the Keras model fed
    images the pipeline corrected."""
    import json

    import keras
    import tensorflow as tf

    spec = Preprocessing(color_constancy=color_constancy)
    segmenter = Segmenter(keras.models.load_model(model_path), spec)
    paths = export(segmenter, str(tmp_path / "exported"))
    rng = np.random.default_rng(0)
    raw = (rng.random((2, 32, 32, 3)) * np.array([0.5, 0.8, 1.0]) * 255).astype(np.uint8)
    model_input = np.stack([shades_of_gray(x) for x in raw]) if color_constancy else raw
    reference = keras.models.load_model(model_path).predict(model_input.astype("float32") / 255, verbose=0)
    x = raw.astype("float32") / 255
    saved = tf.saved_model.load(paths["saved_model"])  # keep a reference: its variables live in it
    from_saved = saved.serve(tf.constant(x)).numpy()
    from_tflite = _tflite(paths["tflite"], x)
    np.testing.assert_allclose(from_saved, reference, atol=2e-3)
    np.testing.assert_allclose(from_tflite, reference, atol=2e-3)
    for other in (from_saved, from_tflite):
        disagree = ((other > 0.5) != (reference > 0.5)) & (np.abs(reference - 0.5) > 1e-2)
        assert not disagree.any()
    if not color_constancy:  # without a preprocessing step the graphs are the model's
        np.testing.assert_allclose(from_saved, reference, atol=1e-5)
    assert json.load(open(tmp_path / "exported" / "preprocessing.json"))["color_constancy"] is color_constancy


def test_only_names_ending_in_the_mask_suffix_are_left_out_and_counted(model_path, tmp_path, capsys):
    from tests.conftest import write_pairs

    folder = tmp_path / "in"
    write_pairs(folder, folder, ["patient7_segmentation_followup", "b"], size=(40, 40))
    code = predict.main(["--model", model_path, str(folder), "--out", str(tmp_path / "out")])
    assert code == 0
    assert _listed(tmp_path / "out") == ["b.png", "patient7_segmentation_followup.png"]
    assert "2 ground-truth mask file(s) (*_segmentation) not segmented" in capsys.readouterr().out


def test_a_missing_overlay_is_drawn_on_a_rerun(model_path, images, tmp_path):
    out = tmp_path / "out"
    predict_folder(model_path, [str(images)], str(out), overlay=True)
    os.remove(out / "overlays" / "b.jpg")  # as after a kill between the mask and its overlay
    stamp = os.path.getmtime(out / "a.png")
    result = predict_folder(model_path, [str(images)], str(out), overlay=True)
    assert sorted(os.listdir(out / "overlays")) == ["a.jpg", "b.jpg", "c.jpg"]
    assert result.written == 0 and result.skipped_existing == 3
    assert os.path.getmtime(out / "a.png") == stamp


def test_masks_follow_the_exif_orientation_of_their_image(model_path, tmp_path):
    image = np.zeros((30, 50, 3), np.uint8)  # displayed 30x50, stored turned
    stored = Image.fromarray(image).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "in").mkdir()
    stored.save(tmp_path / "in" / "a.jpg", exif=exif)
    assert stored.size == (30, 50)
    predict_folder(model_path, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert Image.open(tmp_path / "out" / "a.png").size == (50, 30)  # as displayed


def test_a_padded_model_gets_padded_inputs_and_masks_cut_back(tmp_path):
    """preprocessing.json beside the model says fit: pad. A model that reads the lesion off its
    input (bright = lesion) must give back the drawn lesion at the original 50x90 size: cutting
    the bars off before resizing is what puts it in place (a stretched inverse would squash it)."""
    import json

    import keras

    inputs = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(1, 1, name="logits")
    model = keras.Model(inputs, keras.layers.Activation("sigmoid", dtype="float32")(conv(inputs)))
    conv.set_weights([np.full((1, 1, 3, 1), 4.0 / 3, "float32"), np.array([-2.0], "float32")])
    folder = tmp_path / "model"
    folder.mkdir()
    model.save(folder / "best.keras")
    (folder / "preprocessing.json").write_text(json.dumps(Preprocessing(fit="pad").to_json()))
    yy, xx = np.mgrid[0:50, 0:90]
    lesion = ((yy - 25) / 15) ** 2 + ((xx - 40) / 25) ** 2 < 1
    (tmp_path / "in").mkdir()
    Image.fromarray(np.repeat(np.where(lesion, 255, 0).astype(np.uint8)[..., None], 3, 2)).save(
        tmp_path / "in" / "x.png"
    )
    result = predict_folder(str(folder / "best.keras"), [str(tmp_path / "in")], str(tmp_path / "out"))
    assert result.written == 1
    mask = np.asarray(Image.open(tmp_path / "out" / "x.png")) > 127
    assert mask.shape == (50, 90)
    assert 2 * (mask & lesion).sum() / (mask.sum() + lesion.sum()) > 0.95


def test_inputs_are_checked_before_the_model_loads_and_out_is_not_created(tmp_path, capsys):
    """A mistyped path is the whole input: exit 2 and no empty --out (the model is never read,
    so a missing one is not what gets reported)."""
    with pytest.raises(PredictError, match=r"no images .*nope: no such file or folder"):
        predict_folder(str(tmp_path / "absent.keras"), [str(tmp_path / "nope")], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_file_named_twice_is_segmented_once_and_a_stem_clash_names_the_other_input(
    model_path, images, tmp_path
):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(images / "a.jpg").save(other / "a.png")
    result = predict_folder(
        model_path, [str(images), str(images / "a.jpg"), str(other / "a.png")], str(tmp_path / "out")
    )
    assert result.written == 3
    assert result.problems == [
        (str(other / "a.png"), f"{images / 'a.jpg'} has the same stem, a; its mask would overwrite this one")
    ]


def test_tiff_and_webp_are_found_in_folders_and_other_files_are_counted(model_path, images, tmp_path, capsys):
    Image.open(images / "a.jpg").save(images / "t.tif")
    Image.open(images / "a.jpg").save(images / "w.webp")
    (images / "notes.txt").write_text("x")
    code = predict.main(["--model", model_path, str(images), "--out", str(tmp_path / "out")])
    assert code == 0
    assert _listed(tmp_path / "out") == ["a.png", "b.png", "c.png", "t.png", "w.png"]
    out = capsys.readouterr().out
    assert "1 file(s) in the folders not images of a known type (.txt), left out" in out
    assert "(listed above)" not in out


def test_a_kept_mask_gets_its_overlay_from_the_mask_and_a_stale_overlay_is_reported(
    model_path, images, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    kept = np.zeros((50, 70), np.uint8)
    kept[10:30, 20:50] = 255  # not what the model predicts: the overlay must outline this box
    Image.fromarray(kept).save(out / "a.png")
    result = predict_folder(model_path, [str(images / "a.jpg")], str(out), overlay=True)
    assert (result.written, result.overlays_drawn, result.problems) == (0, 1, [])
    moved = np.asarray(Image.open(out / "overlays" / "a.jpg")).astype(int) - np.asarray(
        Image.open(images / "a.jpg")
    ).astype(int)
    magenta = (moved[..., 0] + moved[..., 2]) / 2 - moved[..., 1] > 40  # towards (255, 0, 255)
    assert magenta[10, 22:48].mean() > 0.8 and magenta[29, 22:48].mean() > 0.8
    assert not magenta[:, :15].any() and not magenta[36:].any()
    before = (out / "overlays" / "a.jpg").read_bytes()
    result = predict_folder(model_path, [str(images / "a.jpg")], str(out), overwrite=True)  # no --overlay
    assert (result.written, result.stale_overlays) == (1, 1)  # reported, not redrawn unasked
    assert (out / "overlays" / "a.jpg").read_bytes() == before


def test_a_kept_mask_that_cannot_be_read_is_named_and_the_image_is_not_blamed(
    model_path, images, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"")
    (out / "b.png").write_bytes(np.zeros(10, np.uint8).tobytes())
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(out / "c.png")  # the images are 70x50
    code = predict.main(["--model", model_path, str(images), "--out", str(out), "--overlay"])
    assert code == 1
    captured = capsys.readouterr()
    assert f"no overlay for {images / 'a.jpg'}: its kept mask {out / 'a.png'}: empty file" in captured.err
    assert f"its kept mask {out / 'c.png'} is 10x10, the image 70x50" in captured.err
    assert "3 existing left alone, 0 input(s) not segmented" in captured.out
    assert "3 mask(s) left without an overlay" in captured.out
    with pytest.raises(PredictError, match="its kept mask"):
        predict_folder(model_path, [str(images)], str(out), overlay=True, strict=True)


def test_a_link_is_another_name_and_the_same_folder_twice_counts_once(model_path, images, tmp_path):
    os.symlink(images / "a.jpg", images / "alias.jpg")
    (images / "a_segmentation.png").write_bytes(b"x")
    result = predict_folder(
        model_path, [str(images), str(images) + "/", str(images / "a.jpg")], str(tmp_path / "out")
    )
    assert _listed(tmp_path / "out") == ["a.png", "alias.png", "b.png", "c.png"]
    assert (result.written, result.skipped_masks, result.problems) == (4, 1, [])


def test_the_overlays_folder_of_out_is_refused_as_an_input(model_path, images, tmp_path):
    predict_folder(model_path, [str(images)], str(tmp_path / "out"), overlay=True)
    with pytest.raises(PredictError, match="--out/overlays is also an input folder"):
        predict_folder(
            model_path, [str(tmp_path / "out" / "overlays")], str(tmp_path / "out"), overwrite=True
        )


def test_with_strict_a_name_clash_stops_before_the_model_loads(images, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(images / "a.jpg").save(other / "a.png")
    with pytest.raises(PredictError, match="has the same stem, a"):
        predict_folder(
            str(tmp_path / "no_model.keras"), [str(images), str(other)], str(tmp_path / "out"), strict=True
        )
    assert not (tmp_path / "out").exists()


def test_max_pixels_decides_what_is_too_large(model_path, images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    argv = ["--model", model_path, str(images / "a.jpg"), "--out", str(tmp_path / "out")]
    assert predict.main([*argv, "--max-pixels", "1000"]) == 1
    assert "more than 1,000 pixels" in capsys.readouterr().err
    assert predict.main([*argv, "--max-pixels", "10000"]) == 0
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # the process's limit is put back


def _listed(folder) -> list[str]:
    """What predict.py wrote, less its record of the options and its per-image table."""
    return sorted(
        name for name in os.listdir(folder) if name not in (".skinseg-predict.json", "predictions.csv")
    )
