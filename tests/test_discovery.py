import os

import numpy as np
import pytest

from skinseg.core.errors import DataError
from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.image_io import write_image
from tests.conftest import write_pairs


def _ids(pairs):
    return [p.id for p in pairs]


def test_simple_layout(simple_dataset):
    found = discover_pairs(simple_dataset)
    assert found.layout == "simple"
    assert list(found.splits) == ["train", "test"]
    assert len(found.splits["train"]) == 12 and len(found.splits["test"]) == 4
    pair = found.splits["train"][0]
    assert pair.id == "ISIC_0000000"
    assert pair.image.endswith("training/image/ISIC_0000000.jpg")
    assert pair.mask.endswith("training/label/ISIC_0000000_segmentation.png")
    assert found.problems == []


def test_isic2016(tmp_path):
    for split in ("Training", "Test"):
        write_pairs(
            tmp_path / f"ISBI2016_ISIC_Part1_{split}_Data",
            tmp_path / f"ISBI2016_ISIC_Part1_{split}_GroundTruth",
            ["ISIC_0000000", "ISIC_0000001"],
            mask_suffix="_Segmentation",
        )
    found = discover_pairs(tmp_path)
    assert found.layout == "isic2016"
    assert {k: _ids(v) for k, v in found.splits.items()} == {
        "train": ["ISIC_0000000", "ISIC_0000001"],
        "test": ["ISIC_0000000", "ISIC_0000001"],
    }
    assert found.problems == []


def test_isic2017_ignores_superpixels(tmp_path):
    for split in ("Training", "Validation", "Test_v2"):
        data = tmp_path / f"ISIC-2017_{split}_Data"
        write_pairs(data, tmp_path / f"ISIC-2017_{split}_Part1_GroundTruth", ["ISIC_0000003"])
        write_image(str(data / "ISIC_0000003_superpixels.png"), np.zeros((4, 4, 3), np.uint8))
        (data / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id,age\n")
    found = discover_pairs(tmp_path)
    assert found.layout == "isic2017"
    assert list(found.splits) == ["train", "validation", "test"]
    assert all(_ids(v) == ["ISIC_0000003"] for v in found.splits.values())
    assert found.problems == []


def test_isic2018_nested_unzip_and_missing_ground_truth(tmp_path):
    # Some unzip tools make X/X/; the 2018 test ground truth may be absent.
    inner = tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC2018_Task1-2_Training_Input"
    write_pairs(inner, tmp_path / "ISIC2018_Task1_Training_GroundTruth", ["ISIC_0000004", "ISIC_0000005"])
    (tmp_path / "ISIC2018_Task1_Training_GroundTruth" / "LICENSE.txt").write_text("CC-BY-NC")
    write_pairs(tmp_path / "ISIC2018_Task1-2_Test_Input", tmp_path / "unused", ["ISIC_0000006"])
    found = discover_pairs(tmp_path)
    assert found.layout == "isic2018"
    assert _ids(found.splits["train"]) == ["ISIC_0000004", "ISIC_0000005"]
    assert "test" not in found.splits
    assert [p.problem for p in found.problems] == ["no ground-truth folder ISIC2018_Task1_Test_GroundTruth"]


def test_explicit_folders_and_same_stem_masks(tmp_path):
    write_pairs(tmp_path / "imgs", tmp_path / "masks", ["a", "b"], mask_suffix="")
    found = discover_pairs(tmp_path / "imgs", tmp_path / "masks")
    assert found.layout == "folders" and _ids(found.splits["all"]) == ["a", "b"]


def test_one_folder_with_images_and_masks(tmp_path):
    write_pairs(tmp_path / "flat", tmp_path / "flat", ["a", "b"], mask_suffix="_SEGMENTATION")
    found = discover_pairs(tmp_path / "flat", tmp_path / "flat")
    assert _ids(found.splits["all"]) == ["a", "b"] and found.problems == []


def test_unpaired_and_duplicate_files_are_reported(tmp_path):
    images, masks = tmp_path / "training" / "image", tmp_path / "training" / "label"
    write_pairs(images, masks, ["ok", "dup", "lonely_image"])
    os.remove(masks / "lonely_image_segmentation.png")
    write_pairs(tmp_path / "elsewhere", masks, ["lonely_mask"])
    write_image(str(images / "dup.png"), np.zeros((4, 4, 3), np.uint8))
    found = discover_pairs(tmp_path)
    assert _ids(found.splits["train"]) == ["ok"]
    problems = {os.path.basename(p.file): p.problem for p in found.problems}
    assert problems["lonely_image.jpg"].startswith("image without a mask")
    assert problems["lonely_mask_segmentation.png"].startswith("mask without an image")
    assert "two images share the ID dup" in problems["dup.jpg"]
    assert "two images share the ID dup" in problems["dup.png"]
    assert all(p.severity == "error" for p in found.problems)


def test_symlink_loop_is_reported(tmp_path):
    images, masks = tmp_path / "training" / "image", tmp_path / "training" / "label"
    write_pairs(images, masks, ["a"])
    os.symlink(images / "loop2.jpg", images / "loop1.jpg")
    os.symlink(images / "loop1.jpg", images / "loop2.jpg")
    found = discover_pairs(tmp_path)
    assert _ids(found.splits["train"]) == ["a"]
    assert sorted(os.path.basename(p.file) for p in found.problems) == ["loop1.jpg", "loop2.jpg"]
    assert "symlink loop" in found.problems[0].problem


def test_unknown_layout_and_not_a_folder(tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(DataError, match="no data set layout recognised"):
        discover_pairs(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        discover_pairs(tmp_path / "missing")


def test_several_challenges_is_an_error(tmp_path):
    write_pairs(
        tmp_path / "ISIC-2017_Training_Data", tmp_path / "ISIC-2017_Training_Part1_GroundTruth", ["a"]
    )
    write_pairs(
        tmp_path / "ISIC2018_Task1-2_Training_Input", tmp_path / "ISIC2018_Task1_Training_GroundTruth", ["b"]
    )
    with pytest.raises(DataError, match="several challenges"):
        discover_pairs(tmp_path)


def test_two_images_of_one_id_do_not_make_their_mask_an_orphan(tmp_path):
    write_pairs(tmp_path / "images", tmp_path / "masks", ["X"])
    write_image(str(tmp_path / "images" / "X.png"), np.zeros((4, 4, 3), np.uint8))
    found = discover_pairs(str(tmp_path / "images"), str(tmp_path / "masks"))
    problems = [p.problem for p in found.problems]
    assert len(problems) == 2 and all("two images share the ID X" in p for p in problems)
