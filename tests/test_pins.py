"""Dependency-pin rewriting: setup.py through its AST, pyproject.toml through tomlkit, and the real
autoawq sdist from PyPI built with its torch pin set to the target's torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builder.building.pins import rewrite_pyproject, rewrite_setup_py, rewrite_tree
from builder.errors import PatchError
from builder.planning.requirements import RequirementRules
from tests.conftest import builder_json, label, make_venv, run_builder, running_torch_version

RULES = RequirementRules.make(("autoawq-kernels",), {"torch": "2.14.1"})

SETUP_PY = textwrap.dedent('''\
    import os
    from setuptools import setup
    TORCH = os.environ.get("TORCH_VERSION", "2.5.1")

    requirements = [
        f"torch>={TORCH}",   # the build env's torch
        "triton",
        'Torch_Audio; sys_platform == "linux"',
    ]
    common = {"setup_requires": ["setuptools", "torch ; python_version >= '3.8'"]}

    setup(
        name="demo",
        install_requires=requirements,
        extras_require={"kernels": ["flash-attn", "autoawq-kernels"], "all": ["autoawq_kernels>=0.0.6"]},
        **common,
    )
    ''')


def test_setup_py_edits_only_the_matching_elements() -> None:
    new, changes = rewrite_setup_py("setup.py", SETUP_PY, RULES)
    assert [c.describe() for c in changes] == [
        "setup.py: torch>={TORCH} -> torch==2.14.1",
        "setup.py: autoawq-kernels -> (dropped)",
        "setup.py: autoawq_kernels>=0.0.6 -> (dropped)",
        "setup.py: torch ; python_version >= '3.8' -> torch==2.14.1; python_version >= \"3.8\"",
    ]
    assert '    "torch==2.14.1",   # the build env\'s torch\n' in new
    assert '"kernels": ["flash-attn"], "all": []' in new
    assert "\"torch==2.14.1; python_version >= \\\"3.8\\\"\"" in new
    assert "'Torch_Audio; sys_platform == \"linux\"'" in new  # another package, untouched
    untouched = [line for line in SETUP_PY.splitlines() if "torch" not in line.lower() and "kernels" not in line]
    assert all(line in new.splitlines() for line in untouched)


def test_pyproject_keeps_its_formatting() -> None:
    text = textwrap.dedent('''\
        [build-system]
        requires = ["setuptools>=64", "torch>=2.1"]  # build against torch

        [project]
        name = "demo"
        dependencies = [
            "torch>=2.1,<3",   # keep me commented
            "numpy",
        ]

        [project.optional-dependencies]
        kernels = ["autoawq-kernels"]
        ''')
    new, changes = rewrite_pyproject("pyproject.toml", text, RULES)
    assert [c.describe() for c in changes] == [
        "pyproject.toml: torch>=2.1,<3 -> torch==2.14.1",
        "pyproject.toml: autoawq-kernels -> (dropped)",
        "pyproject.toml: torch>=2.1 -> torch==2.14.1",
    ]
    assert '"torch==2.14.1",   # keep me commented' in new
    assert 'requires = ["setuptools>=64", "torch==2.14.1"]  # build against torch' in new
    assert "kernels = []" in new


def test_a_pin_that_is_not_there_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text(SETUP_PY)
    with pytest.raises(PatchError) as caught:
        rewrite_tree(tmp_path, ("setup.py",), RequirementRules.make(("autoawq-kernels", "torchx"), {}))
    assert "no requirement 'torchx' in setup.py" in caught.value.message
    assert "found: autoawq-kernels" in caught.value.message and "triton" in caught.value.message
    assert (tmp_path / "setup.py").read_text() == SETUP_PY


def torch_lines(python: Path) -> list[str]:
    freeze = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "freeze", "--all"],
                            capture_output=True, text=True, check=True).stdout
    return [line for line in freeze.splitlines() if line.lower().startswith("torch")]


def test_autoawq_from_pypi_plans_the_rewrite_and_keeps_the_target_torch(tmp_path: Path) -> None:
    with_kernels = builder_json("plan", "autoawq", "--version", "0.2.8", "--arch", "86", "--cache", str(tmp_path / "c"))
    torch = running_torch_version().split("+")[0]
    pinned = f"autoawq-kernels==0.0.9+{label('86')}"
    assert with_kernels["pin_rewrites"] == [f"setup.py: torch>={{TORCH_VERSION}} -> torch=={torch}",
                                            f"setup.py: autoawq-kernels -> {pinned}"]
    assert with_kernels["local_version"] == label("86")
    # without its kernels (GitHub's tag archive is out of reach here): no --arch needed
    plan = builder_json("plan", "autoawq", "--version", "0.2.8", "--no-companions", "--cache", str(tmp_path / "c"))
    assert plan["archs"] == [] and plan["local_version"] == label()
    assert plan["pin_rewrites"] == [f"setup.py: torch>={{TORCH_VERSION}} -> torch=={torch}",
                                    "setup.py: autoawq-kernels -> (dropped)"]
    venv = make_venv(tmp_path / "venv")
    before = torch_lines(venv)
    result = builder_json("build", "autoawq", "--version", "0.2.8", "--no-companions", "--python", str(venv),
                          "--cache", str(tmp_path / "c"))
    assert result["installed_into"] == str(venv)
    metadata = subprocess.run([venv, "-c", "import importlib.metadata as m; print(m.requires('autoawq'))"],
                              capture_output=True, text=True, check=True).stdout
    assert f"'torch=={torch}'" in metadata and "autoawq-kernels" not in metadata
    assert torch_lines(venv) == before


def test_a_recipe_pin_missing_from_setup_py_fails_before_compiling(tmp_path: Path) -> None:
    recipe = Path("recipes/autoawq.toml").read_text().replace('rewrite = ["setup.py"]',
                                                              'rewrite = ["setup.py"]\ndrop = ["torchx"]')
    path = tmp_path / "autoawq.toml"
    path.write_text(recipe)
    result = run_builder("build", str(path), "--no-companions", "--no-install", "--cache", str(tmp_path / "c"))
    assert result.returncode == 7, result.stderr
    assert "no requirement 'torchx' in setup.py" in result.stderr
    assert not list((tmp_path / "c").glob("entries/*"))
    plan = run_builder("plan", str(path), "--no-companions", "--cache", str(tmp_path / "c"), "--json")
    assert plan.returncode == 7 and "torchx" in plan.stderr
