"""The package's floors (skinseg/__init__.py) run one way, with no cycles, and the contract that
says so (pyproject.toml [tool.importlinter]) catches an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import grimp
import pytest

from tests.conftest import ROOT

LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(root: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT_IMPORTS, "--config", os.path.join(root, "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


@pytest.mark.skipif(not os.path.exists(LINT_IMPORTS), reason="import-linter not installed")
def test_the_contract_holds_and_an_upward_import_breaks_it(tmp_path):
    done = _lint(ROOT)
    assert done.returncode == 0 and "1 kept, 0 broken" in done.stdout, done.stdout + done.stderr
    copy = tmp_path / "checkout"
    copy.mkdir()
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), copy)
    shutil.copytree(
        os.path.join(ROOT, "skinseg"),
        copy / "skinseg",
        ignore=shutil.ignore_patterns("__pycache__", "*.keras"),
    )
    with open(copy / "skinseg" / "core" / "atomic.py", "a", encoding="utf-8") as handle:
        handle.write("\nfrom skinseg.training import config  # noqa: E402  (a ground floor reaching up)\n")
    broken = _lint(str(copy))
    assert broken.returncode == 1, broken.stdout
    assert "BROKEN" in broken.stdout and "skinseg.core.atomic -> skinseg.training.config" in broken.stdout


def test_no_import_cycles():
    assert _cycles(grimp.build_graph("skinseg")) == []


def test_one_file_answers_to_one_name():
    """No top-level `models`, `metrics`, ... beside the package: `skinseg.models` is the only
    name of skinseg/models/ (a checkout and an install give the same modules)."""
    import skinseg

    assert list(skinseg.__path__) == [os.path.join(ROOT, "skinseg")]
    for name in ("models", "metrics", "losses", "training", "evaluation", "data_pipeline", "run_folder"):
        assert not os.path.exists(os.path.join(ROOT, name)), name


def test_help_does_not_import_tensorflow():
    """Every command answers --help without TensorFlow (it takes seconds to import)."""
    code = (
        "import sys, contextlib, io\n"
        "from skinseg.cli import train, evaluate, predict, data, models\n"
        "for command in (train, evaluate, predict, data, models):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            command.main(['--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_lock_degrades_where_fcntl_does_not_exist(tmp_path, monkeypatch, caplog):
    """Windows has no fcntl: msvcrt's byte lock there; on a platform with neither, no lock and a
    warning, never an import error."""
    from skinseg.core import locking
    from skinseg.core.run_folder import RunFolder

    monkeypatch.setattr(locking, "fcntl", None)
    monkeypatch.setattr(locking, "msvcrt", None)
    monkeypatch.setattr(locking, "_warned", False)
    run = RunFolder(tmp_path / "run")
    run.lock()
    RunFolder(tmp_path / "run").lock()  # a second holder is not refused without a lock primitive
    assert caplog.text.count("no file locking on this platform") == 1
    run.unlock()
