import os

import pytest

from skinseg.core.errors import DataError
from skinseg.data_pipeline.discovery import Pair
from skinseg.data_pipeline.split import carve_validation, read_split, write_split


def _pairs(n):
    return [Pair(f"id{i:03d}", f"/x/id{i:03d}.jpg", f"/x/id{i:03d}_segmentation.png") for i in range(n)]


def test_carve_is_seeded_disjoint_and_order_invariant():
    pairs = _pairs(50)
    train, val = carve_validation(pairs, 0.1, seed=3)
    assert len(val) == 5 and len(train) == 45
    assert not {p.id for p in train} & {p.id for p in val}
    assert carve_validation(list(reversed(pairs)), 0.1, seed=3) == (train, val)
    assert carve_validation(pairs, 0.1, seed=4)[1] != val


def test_carve_edge_cases():
    assert carve_validation(_pairs(5), 0.0, 0) == (_pairs(5), [])
    train, val = carve_validation(_pairs(3), 0.01, 0)  # at least one validation pair
    assert len(val) == 1 and len(train) == 2
    with pytest.raises(ValueError, match="val_fraction"):
        carve_validation(_pairs(3), 1.0, 0)


def test_split_round_trip(tmp_path):
    path = str(tmp_path / "split.json")
    image = tmp_path / "img.jpg"
    image.write_bytes(b"x")  # read_split checks that the listed files still exist
    pairs = [Pair(p.id, str(image), p.mask) for p in _pairs(4)]
    write_split(path, {"train": pairs[:3], "validation": pairs[3:], "test": []}, seed=1)
    assert read_split(path) == {"train": pairs[:3], "validation": pairs[3:], "test": []}


def test_split_with_moved_data_names_the_file(tmp_path):
    path = str(tmp_path / "split.json")
    write_split(path, {"train": _pairs(1), "validation": [], "test": []})
    with pytest.raises(DataError, match="no longer exists"):
        read_split(path)


def _isic2017(root):
    from tests.conftest import write_pairs

    for k, split in enumerate(("Training", "Validation", "Test_v2")):
        ids = [f"ISIC_{k}{i:06d}" for i in range(6 if split == "Training" else 2)]
        write_pairs(
            root / f"ISIC-2017_{split}_Data",
            root / f"ISIC-2017_{split}_Part1_GroundTruth",
            ids,
            (32, 32),
            start=10 * k,  # other pictures in each split: the same ones would be leakage
        )
    return str(root)


@pytest.mark.parametrize(
    ("val_from", "source", "n_val"), [("auto", "layout", 2), ("layout", "layout", 2), ("train", "train", 1)]
)
def test_the_layouts_own_validation_split_is_used_when_it_has_one(tmp_path, val_from, source, n_val):
    from skinseg.data_pipeline.split import assemble_splits

    splits = assemble_splits(
        [(_isic2017(tmp_path), None)],
        image_size=32,
        val_fraction=0.2,
        val_from=val_from,
        seed=0,
        skip_bad=False,
    )
    assert splits.sources[0].validation_from == source and len(splits.validation) == n_val
    assert {p.id[:6] for p in splits.validation} == ({"ISIC_1"} if source == "layout" else {"ISIC_0"})
    assert len(splits.test) == 2 and len(splits.train) == 6 - (n_val if source == "train" else 0)


def test_asking_for_a_validation_split_the_layout_lacks_is_an_error(simple_dataset):
    from skinseg.data_pipeline.split import assemble_splits

    with pytest.raises(DataError, match="has no validation split; use --val-from train"):
        assemble_splits(
            [(simple_dataset, None)],
            image_size=32,
            val_fraction=0.2,
            val_from="layout",
            seed=0,
            skip_bad=False,
        )


def test_several_sources_carve_validation_and_keep_test_per_source(tmp_path):
    from skinseg.data_pipeline.split import assemble_splits
    from tests.conftest import make_simple, write_pairs

    first = make_simple(tmp_path / "a", n_train=10, n_test=2)
    second = tmp_path / "b"  # another layout: images and masks folders, all training data
    write_pairs(second / "images", second / "masks", [f"B_{k:03d}" for k in range(20)], start=100)
    splits = assemble_splits(
        [(first, None), (str(second / "images"), str(second / "masks"))],
        image_size=32,
        val_fraction=0.2,
        val_from="auto",
        seed=0,
        skip_bad=False,
    )
    assert [s.counts for s in splits.sources] == [
        {"train": 8, "validation": 2, "test": 2},
        {"train": 16, "validation": 4, "test": 0},
    ]
    assert {splits.source_of[p.image] for p in splits.validation} == {0, 1}
    assert {splits.source_of[p.image] for p in splits.test} == {0}
    assert len(splits.train) == 24


def test_an_image_shared_by_two_sources_is_leakage(tmp_path):
    import shutil

    from skinseg.data_pipeline.split import assemble_splits
    from tests.conftest import make_simple, write_pairs

    first = make_simple(tmp_path / "a", n_train=6, n_test=2)
    second = tmp_path / "b"
    write_pairs(second / "images", second / "masks", [f"B_{k:03d}" for k in range(6)], start=100)
    test_image = sorted((tmp_path / "a" / "testing" / "image").iterdir())[0]  # a's test image in b
    shutil.copy(test_image, second / "images" / "LEAK.jpg")
    shutil.copy(
        sorted((tmp_path / "a" / "testing" / "label").iterdir())[0],
        second / "masks" / "LEAK_segmentation.png",
    )
    with pytest.raises(DataError, match=r"1 image\(s\) in more than one split") as err:
        assemble_splits(
            [(first, None), (str(second / "images"), str(second / "masks"))],
            image_size=32,
            val_fraction=0.2,
            val_from="auto",
            seed=0,
            skip_bad=False,
        )
    assert "the same pixels as" in str(err.value) and "LEAK.jpg" in str(err.value)


def test_the_same_data_set_given_twice_is_refused_by_content(tmp_path):
    import os

    from skinseg.data_pipeline.split import assemble_splits
    from tests.conftest import make_simple

    first = make_simple(tmp_path / "a", n_train=6, n_test=2)
    os.symlink(first, tmp_path / "link-to-a")
    with pytest.raises(DataError, match="the same data set given twice") as err:
        assemble_splits(
            [(first, None), (str(tmp_path / "link-to-a"), None)],
            image_size=32,
            val_fraction=0.2,
            val_from="auto",
            seed=0,
            skip_bad=False,
        )
    assert "link-to-a" in str(err.value) or str(first) in str(err.value)


def test_two_folders_for_one_split_are_refused_naming_both(tmp_path):
    import shutil

    from skinseg.data_pipeline.discovery import discover_pairs
    from tests.conftest import make_simple

    root = make_simple(tmp_path / "data", n_train=4, n_test=2)
    shutil.copytree(os.path.join(root, "testing"), os.path.join(root, "test"))
    with pytest.raises(DataError, match="two folders for the test split") as err:
        discover_pairs(root)
    assert os.path.join(root, "test") in str(err.value) and os.path.join(root, "testing") in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "not a split written by train.py"),
        ('{"train": 3}', "train is not a list of pairs"),
        ('{"test": [{"id": "a", "image": 1, "mask": "m"}]}', r"test\[0\] is not a pair"),
        ('{"validation": [{"id": "a"}]}', r"validation\[0\] is not a pair"),
    ],
)
def test_a_damaged_split_json_names_the_file_and_the_key(tmp_path, content, message):
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_split(str(path))
    assert str(path) in str(err.value)


def test_excluded_ids_are_in_no_split(tmp_path):
    from skinseg.data_pipeline.split import assemble_splits, read_id_list
    from tests.conftest import make_simple

    root = make_simple(tmp_path / "a", n_train=8, n_test=3)
    listed = tmp_path / "holdout.txt"
    listed.write_text("# a hold-out\nid\nISIC_0000001\n\nISIC_0000009,extra column\n")
    ids = read_id_list(str(listed))
    assert ids == {"ISIC_0000001", "ISIC_0000009"}
    splits = assemble_splits(
        [(root, None)],
        image_size=32,
        val_fraction=0.25,
        val_from="auto",
        seed=0,
        skip_bad=False,
        exclude=frozenset(ids),
    )
    kept = {p.id for pairs in splits.as_dict().values() for p in pairs}
    assert not kept & ids and len(kept) == 11 - 2
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="no image IDs in it"):
        read_id_list(str(tmp_path / "empty.txt"))
