"""`pip install .` into a fresh virtual environment: the console scripts run, and only the
`skinseg` package lands in site-packages (no generic top-level `models` or `metrics`)."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.integration
def test_pip_install_gives_console_scripts_and_one_package(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(
        os.path.join(ROOT, "skinseg"), source / "skinseg", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    target = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (TensorFlow & co.) are already installed in this interpreter's environment:
    # make them visible to the new one rather than downloading them again.
    with open(os.path.join(target, "test_dependencies.pth"), "w") as handle:
        handle.write("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    installed = set(os.listdir(target))
    assert "skinseg" in installed
    assert not installed & {"models", "metrics", "losses", "training", "evaluation", "data_pipeline"}

    def modules(root):
        return sorted(
            os.path.relpath(os.path.join(folder, name), root)
            for folder, _, names in os.walk(root)
            for name in names
            if name.endswith(".py")
        )

    # The same modules as the checkout, under the same names: no package-dir mapping.
    assert modules(os.path.join(target, "skinseg")) == modules(os.path.join(ROOT, "skinseg"))
    shipped = os.path.join(target, "skinseg", "models", "pretrained")  # predict --model pretrained
    assert {"skinseg-isic.keras", "MODEL_CARD.md", "preprocessing.json", "postprocess.json"} <= set(
        os.listdir(shipped)
    )
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing of it is importable from here
    elsewhere.mkdir()
    for script in ("skinseg-predict", "skinseg-train", "skinseg-evaluate", "skinseg-data", "skinseg-models"):
        done = subprocess.run(
            [str(venv / "bin" / script), "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and "usage:" in done.stdout, (script, done.stderr[-1500:])
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import skinseg.models.registry as r; print(r.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(target), where.stdout + where.stderr
