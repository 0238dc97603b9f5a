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
