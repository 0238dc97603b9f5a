import json
import os

import numpy as np
from PIL import Image

from skinseg.cli.data import main
from skinseg.data_pipeline.report import inspect_dataset


def test_inspect_json_reports_splits_and_no_problems(simple_dataset, capsys):
    assert main(["inspect", simple_dataset, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"splits", "problems"}
    assert report["splits"]["train"]["pairs"] == 12 and report["splits"]["test"]["pairs"] == 4
    assert report["splits"]["train"]["height"] == [48, 48] and report["splits"]["train"]["width"] == [64, 64]
    assert 0.02 < report["splits"]["train"]["mean_lesion_fraction"] < 0.6
    assert report["problems"] == []


def test_inspect_lists_every_problem_with_its_file(simple_dataset, capsys):
    image_dir = os.path.join(simple_dataset, "training", "image")
    mask_dir = os.path.join(simple_dataset, "training", "label")
    open(os.path.join(image_dir, "ISIC_0000000.jpg"), "wb").close()  # zero bytes
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(
        os.path.join(mask_dir, "ISIC_0000001_segmentation.png")
    )
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(
        os.path.join(mask_dir, "ISIC_0000002_segmentation.png")
    )
    report = inspect_dataset(simple_dataset)
    problems = {(os.path.basename(p["file"]), p["severity"]): p["problem"] for p in report["problems"]}
    assert problems[("ISIC_0000000.jpg", "error")] == "empty file (0 bytes)"
    assert problems[("ISIC_0000001_segmentation.png", "error")] == "mask is 10x10 but its image is 64x48"
    assert problems[("ISIC_0000002_segmentation.png", "warning")] == "empty mask (no lesion pixel)"
    assert report["splits"]["train"]["pairs"] == 10 and report["splits"]["train"]["unusable"] == 2
    assert report["splits"]["train"]["empty_masks"] == 1

    assert main(["inspect", simple_dataset]) == 0
    text = capsys.readouterr().out
    assert "2 error(s), 1 warning(s)" in text
    assert "training/image/ISIC_0000000.jpg: empty file (0 bytes)" in text
    assert main(["inspect", simple_dataset, "--strict"]) == 1


def test_inspect_unknown_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
