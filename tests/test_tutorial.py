"""Every code block of docs/extending.md and the README's Python API block runs as written, so the
tutorial cannot rot. The tutorial's outer loss and objective run from the CLI with nothing added to
the package: they live in files the tutorial writes into an empty directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
FILE_MARK = re.compile(r"^# file: (\S+)\n")


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, text)`` of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(markdown)]


def run_blocks(blocks: list[tuple[str, str]], directory: Path, monkeypatch) -> None:
    """Run the blocks in ``directory``: ``# file: NAME`` blocks are written, Python blocks share one
    namespace in this process, shell blocks run in bash with ``metaconstraint`` and ``python`` as this
    interpreter (so the checkout under test is what runs)."""
    monkeypatch.chdir(directory)
    monkeypatch.syspath_prepend(str(directory))  # as `python script.py` run there would see it
    env = {**os.environ, "METACONSTRAINT_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    preamble = f'metaconstraint() {{ "{sys.executable}" -m metaconstraint.cli "$@"; }}\npython() {{ "{sys.executable}" "$@"; }}\nset -e\n'
    namespace: dict = {"__name__": "__docs__"}
    for index, (language, text) in enumerate(blocks):
        marked = FILE_MARK.match(text)
        if marked:
            (directory / marked.group(1)).write_text(text)
        elif language == "python":
            exec(compile(text, f"<block {index}>", "exec"), namespace)
        elif language == "bash":
            result = subprocess.run(["bash", "-c", preamble + text], cwd=directory, env=env, capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f"block {index} failed:\n{text}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        else:
            raise AssertionError(f"block {index}: a {language} block with no '# file: NAME' line cannot be run")


@pytest.fixture
def fresh_modules():
    """The tutorial imports modules from a temporary directory and registers losses, objectives and
    an algorithm: forget them afterwards, so other tests see the package's registries only."""
    from metaconstraint.algorithms import ALGORITHMS
    from metaconstraint.objectives import registry as objectives
    from metaconstraint.outer_losses import registry as outer_losses

    registries = (ALGORITHMS, objectives._REGISTRY, outer_losses._REGISTRY)
    saved = [dict(r) for r in registries]
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("my_"):
            del sys.modules[name]
    for registry, contents in zip(registries, saved):
        registry.clear()
        registry.update(contents)


def test_every_block_of_the_extending_tutorial_runs(tmp_path, monkeypatch, fresh_modules):
    blocks = code_blocks((ROOT / "docs" / "extending.md").read_text())
    assert {language for language, _ in blocks} == {"python", "bash", "toml"}
    run_blocks(blocks, tmp_path, monkeypatch)
    # the CLI runs used the user's code, found in the working directory, not in the package
    config = (tmp_path / "runs-tutorial" / "aspc" / "dapg__pen__expert-v0" / "seed0" / "config.toml").read_text()
    assert "my_losses:action_change=0.5" in config
    metrics = (tmp_path / "runs-tutorial" / "aspc" / "dapg__pen__expert-v0" / "seed0" / "metrics.jsonl").read_text()
    assert '"outer/my_losses:action_change"' in metrics
    config = (tmp_path / "runs-tutorial-config" / "aspc" / "dapg__pen__expert-v0" / "seed0" / "config.toml").read_text()
    assert 'objective = "my_objectives:AbsoluteBC"' in config
    assert not list(ROOT.joinpath("metaconstraint").rglob("my_*.py"))


def test_the_readme_python_api_block_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = [(language, text) for language, text in code_blocks(section) if language == "python"]
    assert len(blocks) == 1
    run_blocks(blocks, tmp_path, monkeypatch)
    assert (tmp_path / "runs-notebook" / "aspc-iql" / "dapg__pen__expert-v0" / "seed0" / "summary.json").is_file()
