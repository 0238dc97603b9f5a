"""A saved network is made of Keras' built-in layers only: every preset's `.keras` file loads in a
fresh process that imports keras and tensorflow and nothing of this project, with Keras' safe
mode on, and predicts exactly what the saved model predicted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from skinseg.models.registry import PRESETS, build_model

# (file name, preset, image size, overrides): every preset at a tiny width, both DeepLab backbones.
CASES = [
    ("baseline", "baseline", 32, {"width": 2}),
    ("bigger", "bigger", 32, {"width": 2}),
    ("deeper", "deeper", 128, {"width": 2}),
    ("bigger_deeper", "bigger_deeper", 128, {"width": 2}),
    ("slightly_bigger_deeper", "slightly_bigger_deeper", 128, {"width": 2}),
    ("unet_zero_padding", "baseline", 32, {"width": 2, "padding": "zeros"}),
    ("deeplabv3plus_resnet101", "deeplabv3plus", 32, {"width": 8, "backbone": "resnet101"}),
    ("deeplabv3plus_resnet50", "deeplabv3plus", 32, {"width": 8, "backbone": "resnet50"}),
    ("hardnet_mseg", "hardnet_mseg", 32, {"width": 4}),
]

CHILD = """
import json, sys
import numpy as np
import keras
out = {}
for name, size in json.loads(sys.argv[1]).items():
    model = keras.models.load_model(sys.argv[2] + "/" + name + ".keras", compile=False, safe_mode=True)
    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
    out[name] = model.predict(x, verbose=0).tolist()
project = [m for m in sys.modules if m.split(".")[0] in
           ("models", "data_pipeline", "losses", "metrics", "training", "evaluation", "skinseg")]
print(json.dumps({"predictions": out, "project_modules": project}))
"""


@pytest.mark.integration
def test_every_preset_loads_in_a_fresh_process_with_keras_alone(tmp_path):
    assert {preset for _, preset, _, _ in CASES} == set(PRESETS)
    expected, sizes = {}, {}
    for name, preset, size, overrides in CASES:
        model = build_model(preset, size, **overrides)
        model.save(tmp_path / f"{name}.keras")
        x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
        expected[name], sizes[name] = model.predict(x, verbose=0), size
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(sizes), str(tmp_path)],
        cwd=str(tmp_path),  # not the repository: nothing of the project is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["project_modules"] == []
    for name, prediction in result["predictions"].items():
        np.testing.assert_allclose(np.array(prediction), expected[name], atol=1e-6, err_msg=name)
    assert set(result["predictions"]) == {name for name, *_ in CASES}
