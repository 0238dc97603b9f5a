"""The bad-input catalogue (docs/FAULTS.md, "Bad input"): every case is fed to `python -m skinseg.data_pipeline inspect`,
`train.py`, `evaluate.py` and `predict.py`, and each command's behaviour is asserted: accepted
(with the documented conversion), reported and skipped, or stopped with a message naming the file.
No case may reach the user as a Python traceback; exit codes are non-zero exactly where a command
could not do its whole job."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from skinseg.cli import evaluate, predict, train
from skinseg.cli.data import main as data_main
from tests.conftest import TINY_TRAIN_ARGS, make_simple

pytestmark = pytest.mark.integration  # trains models or starts processes

TRAIN_ARGS = TINY_TRAIN_ARGS


@dataclass(frozen=True)
class Case:
    name: str
    file: str  # the file the messages must name (relative to each split folder)
    inspect: str  # "error: <text>", "warning: <text>" or "ok"
    train: int  # exit code
    evaluate: int
    predict: int
    message: str  # what the error/warning says


def _smooth(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([(xx * 255 // w), (yy * 255 // h), np.full((h, w), 128)]).astype(np.uint8)


def _box_mask(h, w):
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    return mask


def inject(case: str, split_dir: str) -> None:
    """Damage the split folder (`.../training` or `.../testing`) as the case says."""
    images, labels = os.path.join(split_dir, "image"), os.path.join(split_dir, "label")
    name = sorted(os.listdir(images))[0][:-4]  # e.g. ISIC_0000000
    image, mask = os.path.join(images, f"{name}.jpg"), os.path.join(labels, f"{name}_segmentation.png")
    if case == "truncated JPEG":
        data = open(image, "rb").read()
        open(image, "wb").write(data[: len(data) // 2])
    elif case == "zero-byte PNG mask":
        open(mask, "wb").close()
    elif case == "text file named .jpg":
        open(image, "w").write("this is not a JPEG\n")
    elif case == "RGBA PNG":
        rgb = np.asarray(Image.open(image))
        os.remove(image)
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(image[:-4] + ".png")
    elif case == "CMYK JPEG":
        Image.open(image).convert("CMYK").save(image, quality=95)
    elif case == "16-bit PNG mask":
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint16) * 65535).save(mask)
    elif case == "JPEG-compressed mask":
        values = np.asarray(Image.open(mask))
        os.remove(mask)
        Image.fromarray(values).save(mask[:-4] + ".jpg", quality=70)
    elif case == "mask values {0, 1}":
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint8)).save(mask)
    elif case == "mask: lesion in pure red (RGB)":
        red = np.zeros((*np.asarray(Image.open(mask)).shape[:2], 3), np.uint8)
        red[..., 0] = np.asarray(Image.open(mask).convert("L"))
        Image.fromarray(red).save(mask)
    elif case == "mask: lesion only in alpha":
        values = np.asarray(Image.open(mask).convert("L"))
        Image.fromarray(np.dstack([np.zeros((*values.shape, 3), np.uint8), values])).save(mask)
    elif case == "mask values {0, 2}":
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint8) * 2).save(mask)
    elif case == "16-bit mask {0, 1000}":
        Image.fromarray((np.asarray(Image.open(mask)) > 0).astype(np.uint16) * 1000).save(mask)
    elif case == "mask of another size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    elif case == "image without a mask":
        os.remove(mask)
    elif case == "mask without an image":
        os.remove(image)
    elif case == "two images with one ID":
        Image.open(image).save(image[:-4] + ".png")
    elif case == "all-black (empty) mask":
        Image.fromarray(np.zeros_like(np.asarray(Image.open(mask)))).save(mask)
    elif case == "6000x4000 image":  # not the same picture in both splits: that would be leakage
        smooth = _smooth(4000, 6000)
        Image.fromarray(smooth if "training" in split_dir else smooth[::-1]).save(image, quality=90)
        Image.fromarray(_box_mask(4000, 6000)).save(mask)
    elif case == "PNG with damaged pixel data":
        os.remove(image)
        noisy = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(noisy).save(image[:-4] + ".png")
        data = bytearray(open(image[:-4] + ".png", "rb").read())
        data[data.index(b"IDAT") + 200] ^= 0x55  # one byte inside the compressed pixels
        open(image[:-4] + ".png", "wb").write(data)
    elif case == "image over the pixel limit":  # a header that claims 12000x9000 is enough
        os.remove(image)
        Image.fromarray(_smooth(8, 8)).save(image[:-4] + ".png")
        data = bytearray(open(image[:-4] + ".png", "rb").read())
        data[16:24] = struct.pack(">II", 12000, 9000)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        open(image[:-4] + ".png", "wb").write(data)
    elif case == "symlink loop":
        os.remove(image)
        os.symlink(image + ".other.jpg", image)
        os.symlink(image, image + ".other.jpg")
    elif case == "unreadable file (no permission)":
        os.chmod(image, 0)
    else:
        raise AssertionError(case)


CASES = [
    Case("truncated JPEG", "image/ISIC_*.jpg", "error", 2, 2, 1, "truncated file"),
    Case("zero-byte PNG mask", "label/ISIC_*_segmentation.png", "error", 2, 2, 0, "empty file (0 bytes)"),
    Case("text file named .jpg", "image/ISIC_*.jpg", "error", 2, 2, 1, "not a readable image"),
    Case("RGBA PNG", "image/ISIC_*.png", "warning", 0, 0, 0, "alpha channel dropped"),
    Case("CMYK JPEG", "image/ISIC_*.jpg", "warning", 0, 0, 0, "CMYK image converted to RGB"),
    Case("16-bit PNG mask", "label/ISIC_*_segmentation.png", "warning", 0, 0, 0, "16-bit mask"),
    Case("JPEG-compressed mask", "label/ISIC_*_segmentation.jpg", "warning", 0, 0, 0, "binarised at > 127"),
    Case("mask values {0, 1}", "label/ISIC_*_segmentation.png", "warning", 0, 0, 0, "{0, 1}"),
    Case("mask: lesion in pure red (RGB)", "label/ISIC_*_segmentation.png", "error", 2, 2, 0, "colour mask"),
    Case(
        "mask: lesion only in alpha", "label/ISIC_*_segmentation.png", "error", 2, 2, 0, "with transparency"
    ),
    Case("mask values {0, 2}", "label/ISIC_*_segmentation.png", "warning", 0, 0, 0, "lesion where 2"),
    Case("16-bit mask {0, 1000}", "label/ISIC_*_segmentation.png", "warning", 0, 0, 0, "lesion where 1000"),
    Case("mask of another size", "label/ISIC_*_segmentation.png", "error", 2, 2, 0, "mask is 10x10"),
    Case("image without a mask", "image/ISIC_*.jpg", "error", 2, 2, 0, "image without a mask"),
    Case("mask without an image", "label/ISIC_*_segmentation.png", "error", 2, 2, 0, "mask without an image"),
    Case("two images with one ID", "image/ISIC_*.png", "error", 2, 2, 1, "two images share the ID"),
    Case("all-black (empty) mask", "label/ISIC_*_segmentation.png", "warning", 0, 0, 0, "empty mask"),
    Case("6000x4000 image", "", "ok", 0, 0, 0, ""),
    Case("PNG with damaged pixel data", "image/ISIC_*.png", "error", 2, 2, 1, "corrupt image data"),
    Case("image over the pixel limit", "image/ISIC_*.png", "error", 2, 2, 1, "too large to decode safely"),
    Case("symlink loop", "image/ISIC_*.jpg", "error", 2, 2, 1, "symlink loop"),
    Case("unreadable file (no permission)", "image/ISIC_*.jpg", "error", 2, 2, 1, "permission denied"),
    Case("empty folder", "", "error", 2, 2, 2, "no data set layout recognised"),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("catalogue")
    data = make_simple(base / "clean", n_train=8, n_test=3)
    out = str(base / "run")
    assert train.main([*TRAIN_ARGS, "--data", data, "--out", out]) == 0
    return out


@pytest.fixture
def unreadable_as_root(monkeypatch):
    """Root reads a chmod-000 file anyway; make Pillow refuse it as it would for a user."""
    if os.geteuid() != 0:
        return
    original = Image.open

    def guarded(fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)) and os.path.exists(fp) and not os.stat(fp).st_mode & 0o444:
            raise PermissionError(13, "Permission denied", str(fp))
        return original(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded)


def _first_id(root):
    return sorted(os.listdir(os.path.join(root, "training", "image")))[0][:-4]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue(case, trained_run, tmp_path, capsys, unreadable_as_root):
    root = make_simple(tmp_path / "data", n_train=8, n_test=3)
    if case.name == "empty folder":
        for entry in os.listdir(root):
            shutil.rmtree(os.path.join(root, entry))
        test_images = str(tmp_path / "data")
    else:
        train_id = _first_id(root)
        test_id = sorted(os.listdir(os.path.join(root, "testing", "image")))[0][:-4]
        inject(case.name, os.path.join(root, "training"))
        inject(case.name, os.path.join(root, "testing"))
        test_images = os.path.join(root, "testing", "image")
    named = case.file.replace("ISIC_*", train_id) if case.file else ""

    # inspect: reports every problem with its file; exits 0 (it did its job) unless no data set
    code = data_main(["inspect", root])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if case.name == "empty folder":
        assert code == 2 and case.message in err
    else:
        assert code == 0
        if case.inspect == "ok":
            assert "problems: none" in out
        else:
            lines = [x for x in out.splitlines() if x.strip().startswith(case.inspect) and case.message in x]
            assert any(os.path.join("training", named) in line for line in lines), out

    # train.py: accepts (and converts), or stops naming the file (exit 2)
    code = train.main([*TRAIN_ARGS, "--data", root, "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == case.train, err
    if case.train:
        assert case.message in err and (not named or os.path.join("training", named) in err)

    # evaluate.py on this data's test split: scores, or stops naming the file
    code = evaluate.main(["--run", trained_run, "--data", root])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == case.evaluate, err
    if case.evaluate:
        assert case.message in err
    else:
        assert "Dice" in out
    if case.name == "all-black (empty) mask":
        assert "1 with an empty mask" in out

    # predict.py on the test images: segments, or reports and skips (exit 1) keeping the others
    masks_out = tmp_path / "masks"
    code = predict.main(
        ["--model", os.path.join(trained_run, "best.keras"), test_images, "--out", str(masks_out)]
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == case.predict, err
    if case.predict == 1:
        assert (
            f"skipped {os.path.join(test_images, case.file.split('/')[-1].replace('ISIC_*', test_id))}" in err
        )
        assert len(os.listdir(masks_out)) >= 2  # the readable images still got their masks
    elif case.predict == 2:
        assert "no images" in err
    if case.name == "6000x4000 image":
        assert Image.open(masks_out / f"{test_id}.png").size == (6000, 4000)


def test_a_split_whose_masks_are_all_empty_stops_training_and_evaluation(tmp_path, trained_run, capsys):
    root = make_simple(tmp_path / "data", n_train=8, n_test=3)
    for split in ("training", "testing"):
        labels = os.path.join(root, split, "label")
        for name in os.listdir(labels):  # e.g. a lesion encoded dark: every mask reads as empty
            path = os.path.join(labels, name)
            Image.fromarray(np.zeros_like(np.asarray(Image.open(path)))).save(path)
    assert train.main([*TRAIN_ARGS, "--data", root, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "every mask of its train split (8" in err and "--allow-empty-masks" in err
    assert not os.path.exists(tmp_path / "run")
    # evaluation: a model that finds nothing would score Dice 1.0 on these
    code = evaluate.main(["--model", trained_run, "--data", root, "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "every one of its 3 test masks is empty" in err
    assert not os.path.exists(tmp_path / "runs" / "external")
    code = evaluate.main(
        ["--model", trained_run, "--data", root, "--runs-dir", str(tmp_path / "runs"), "--allow-empty-masks"]
    )
    assert code == 0
