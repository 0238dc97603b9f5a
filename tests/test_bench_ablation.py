import pytest

from bench.ablation import paired_effect


def test_the_effect_is_the_mean_paired_difference_with_its_direction():
    lever = {"a": 0.90, "b": 0.80, "c": 0.70, "d": 0.50}
    recipe = {"a": 0.80, "b": 0.80, "c": 0.60, "d": 0.60, "only_in_recipe": 0.1}
    text = paired_effect(lever, recipe)  # differences +0.1, 0, +0.1, -0.1 over the shared images
    mean, rest = text.split(" [")
    assert mean == "+0.0250"
    lo, hi = (float(x) for x in rest.split("]")[0].split(", "))
    assert -0.1 <= lo <= 0.025 <= hi <= 0.1
    assert text.endswith("50% better")


def test_no_difference_gives_a_zero_interval():
    same = {"a": 0.5, "b": 0.7}
    assert paired_effect(same, dict(same)) == "+0.0000 [+0.0000, +0.0000], 0% better"


@pytest.mark.parametrize("lever", [{"x": 1.0}, {}])
def test_no_shared_images_is_an_error(lever):
    with pytest.raises(ValueError, match="no images scored by both"):
        paired_effect(lever, {"y": 1.0})


def test_the_held_out_set_links_exactly_the_listed_ids(tmp_path):
    import os

    from bench.ablation import held_out_set
    from tests.conftest import write_pairs

    images, masks = tmp_path / "extra" / "image", tmp_path / "extra" / "label"
    write_pairs(images, masks, [f"ISIC_{k:07d}" for k in range(6)])
    listed = tmp_path / "ids.txt"
    listed.write_text("# hold-out\nISIC_0000004\nISIC_0000005\n")
    got = held_out_set(str(listed), [str(images), str(masks)], str(tmp_path / "out"))
    assert sorted(os.listdir(got[0])) == ["ISIC_0000004.jpg", "ISIC_0000005.jpg"]
    assert sorted(os.listdir(got[1])) == ["ISIC_0000004_segmentation.png", "ISIC_0000005_segmentation.png"]
    assert (
        held_out_set(str(listed), [str(images), str(masks)], str(tmp_path / "out")) == got
    )  # again: no error
