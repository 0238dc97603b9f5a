"""The README's commands and figures are the tools' own: every `python train.py|evaluate.py|
predict.py` command in its code blocks parses with today's options, and the shipped model's figures
it quotes are the file's."""

from __future__ import annotations

import os
import re
import shlex

import pytest

from skinseg.cli import evaluate, predict, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSERS = {
    "train.py": train.build_parser,
    "evaluate.py": evaluate.build_parser,
    "predict.py": predict.build_parser,
}


def _commands(path: str) -> list[tuple[str, list[str]]]:
    """(script, arguments) of each command line in the file's fenced code blocks (continuation
    lines joined, comments and environment assignments dropped)."""
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line.split(" #", 1)[0]):
                words = shlex.split(part)
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]  # TF_CONFIG=... python train.py
                if len(words) > 2 and words[0] == "python" and words[1] in PARSERS:
                    found.append((words[1], words[2:]))
    return found


COMMANDS = _commands("README.md")


def test_the_readme_has_commands_of_every_script():
    assert {script for script, _ in COMMANDS} == set(PARSERS)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("script,args", COMMANDS, ids=[" ".join([s, *a])[:80] for s, a in COMMANDS])
def test_every_readme_command_parses(script, args):
    args = [a.replace("[--overlay]", "--overlay").replace("[--tta]", "--tta") for a in args]
    args = [a for a in args if a != "..."]
    PARSERS[script]().parse_args(args)  # an unknown or misspelt option exits 2 here


def test_the_shipped_models_figures_are_the_files():
    from skinseg.inference.description import PRETRAINED

    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    size_mb = os.path.getsize(PRETRAINED) / 1e6
    assert f"{size_mb:.1f} MB" in readme
