import os

import numpy as np

from skinseg.data_pipeline.discovery import discover_pairs
from skinseg.data_pipeline.synthetic import default_data, generate_synthetic, synthetic_pair


def test_deterministic_and_plausible():
    a, mask_a = synthetic_pair(0, 5, (96, 128))
    b, mask_b = synthetic_pair(0, 5, (96, 128))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert not np.array_equal(a, synthetic_pair(1, 5, (96, 128))[0])
    assert a.dtype == np.uint8 and a.shape == (96, 128, 3) and mask_a.dtype == bool
    fractions = [synthetic_pair(0, i, (96, 128))[1].mean() for i in range(20)]
    assert min(fractions) > 0.03 and max(fractions) < 0.8
    # the lesion is darker than the skin around it, as in dermoscopy
    image, mask = synthetic_pair(0, 3, (96, 128))
    assert image[mask].mean() < image[~mask].mean() - 20


def test_generate_writes_a_discoverable_layout(tmp_path):
    root = generate_synthetic(str(tmp_path / "syn"), n_train=4, n_test=2, size=(48, 64))
    found = discover_pairs(root)
    assert {k: len(v) for k, v in found.splits.items()} == {"train": 4, "test": 2}
    assert found.problems == []
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".synthetic-")]


def test_default_data_is_generated_once(monkeypatch, tmp_path):
    monkeypatch.setenv("SKINSEG_HOME", str(tmp_path))
    root = default_data(n_train=3, n_test=1)
    stamp = os.path.getmtime(os.path.join(root, "synthetic.json"))
    assert default_data(n_train=3, n_test=1) == root
    assert os.path.getmtime(os.path.join(root, "synthetic.json")) == stamp
