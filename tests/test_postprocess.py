"""Post-processing chosen on validation: hand-built probability maps with a known best choice."""

import json

import numpy as np
import pytest

from skinseg.inference.postprocess import MIN_GAIN, PostProcessing, choose


def _disc(size=32, centre=(16, 16), radius=8):
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_apply_threshold_largest_component_and_holes():
    prob = np.zeros((20, 20))
    prob[2:12, 2:12] = 0.9  # the lesion, with a hole
    prob[6:8, 6:8] = 0.1
    prob[15:17, 15:17] = 0.9  # a speck
    plain = PostProcessing(threshold=0.5).apply(prob)
    assert plain.sum() == 100 - 4 + 4
    cleaned = PostProcessing(threshold=0.5, largest_component=True, fill_holes=True).apply(prob)
    assert cleaned.sum() == 100 and not cleaned[15:17, 15:17].any() and cleaned[6:8, 6:8].all()
    assert not PostProcessing(threshold=0.95).apply(prob).any()
    assert not PostProcessing(largest_component=True).apply(np.zeros((5, 5))).any()  # empty stays empty


def test_choose_moves_the_threshold_of_an_over_segmenting_model():
    # Every map is 0.9 inside the lesion and 0.6 on a ring around it: at 0.5 the ring is lesion.
    truths, probs = [], []
    for r in (6, 8, 10):
        truth = _disc(radius=r)
        prob = np.where(_disc(radius=r + 3), 0.6, 0.05)
        prob[truth] = 0.9
        truths.append(truth)
        probs.append(prob)
    chosen = choose(probs, truths)
    assert 0.6 <= chosen.threshold < 0.9
    assert chosen.chosen_on["dice_chosen"] == pytest.approx(1.0)
    assert chosen.chosen_on["dice_default"] < 0.8
    assert chosen.chosen_on["images"] == 3


def test_choose_keeps_the_defaults_when_nothing_earns_its_place():
    truths = [_disc(radius=r) for r in (5, 7, 9)]
    probs = [np.where(t, 0.8, 0.1) for t in truths]  # already right at 0.5
    chosen = choose(probs, truths)
    assert (chosen.threshold, chosen.largest_component, chosen.fill_holes) == (0.5, False, False)


def test_choose_adds_largest_component_only_when_it_helps():
    truths, probs = [], []
    for r in (6, 8):
        truth = _disc(radius=r)
        prob = np.where(truth, 0.9, 0.0)
        prob[0:4, 0:4] = 0.9  # a false positive far from the lesion
        truths.append(truth)
        probs.append(prob)
    chosen = choose(probs, truths)
    assert chosen.largest_component and chosen.threshold == 0.5
    assert chosen.chosen_on["dice_chosen"] - chosen.chosen_on["dice_default"] > MIN_GAIN


def test_no_validation_images_keeps_defaults():
    assert choose([], []) == PostProcessing()


def test_json_round_trip_and_bad_records():
    chosen = PostProcessing(0.65, True, False, {"images": 3})
    again = PostProcessing.from_json(json.loads(json.dumps(chosen.to_json())))
    assert again == chosen and again.chosen_on == {"images": 3}
    with pytest.raises(ValueError, match="post.json: not a post-processing record"):
        PostProcessing.from_json({"threshold": 2}, "post.json")
    with pytest.raises(ValueError, match="not a post-processing record"):
        PostProcessing.from_json({"largest_component": True})
    # `true` is not a threshold (Python's float(True) would read it as 1.0: every mask empty)
    with pytest.raises(ValueError, match="threshold must be a number in \\[0, 1\\], not True"):
        PostProcessing.from_json({"threshold": True})
    with pytest.raises(ValueError, match="threshold must be a number"):
        PostProcessing.from_json({"threshold": "0.5"})
    with pytest.raises(ValueError, match="unknown key\\(s\\) treshold"):
        PostProcessing.from_json({"threshold": 0.5, "treshold": 0.4})
    with pytest.raises(ValueError, match="largest_component must be true or false"):
        PostProcessing.from_json({"threshold": 0.5, "largest_component": "yes"})
    assert PostProcessing(0.65, True, True).describe() == "threshold 0.65, largest component, holes filled"
