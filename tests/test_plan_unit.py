"""The planner and the cache key as a library (unit): resolve_plan over a described machine, no
process started; every input that can change the binary changes the key, the others do not."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from builder.errors import RequirementError, ToolchainError
from builder.planning.plan import Plan, resolve_plan
from builder.planning.recipe import RecipeBook, parse_recipe
from builder.planning.request import Request
from builder.planning.source_spec import SourceSpec
from builder.planning.target import TargetInfo
from builder.planning.toolchain import HostCompiler, Toolkit
from tests.conftest import TORCHEXT

TARGET = TargetInfo(python_exe=Path("/venv/bin/python"), python="3.11", python_tag="cp311",
                    platform="linux_x86_64", torch="2.14.1+cu130", torch_cuda="13.0", cxx11_abi=True,
                    cuda_available=False, gpu_capabilities=())
TOOLKIT = Toolkit(root=Path("/opt/cuda"), nvcc=Path("/opt/cuda/bin/nvcc"), version="13.0.88",
                  archs=("75", "80", "86", "90", "100", "120"))
GCC = HostCompiler(cc="/usr/bin/gcc", cxx="/usr/bin/g++", major=12)
RECIPE: dict[str, Any] = {
    "name": "unit-ext", "backend": "torch-ext", "default_version": "0.1.0", "description": "a unit test",
    "versions": {"0.1.0": {"source": {"path": str(TORCHEXT)}}, "0.2.0": {"source": {"path": str(TORCHEXT)}}},
    "build": {"job_memory_gb": 1, "env": {"UNIT_ARCHS": "{archs}"}},
    "deps": {"drop": ["torch"]},
    "variants": {"fast": {"choices": ["on", "off"], "default": "on", "env": {"UNIT_FAST": "0"}}},
}


def plan(request: dict[str, Any] | None = None, *, recipe: dict[str, Any] | None = None,
         target: TargetInfo = TARGET, toolkit: Toolkit = TOOLKIT, compiler: HostCompiler = GCC,
         source_sha256: str = "a" * 64, environ: dict[str, str] | None = None) -> Plan:
    asked = Request(**{"recipe": "unit-ext", "archs": ("86",), **(request or {})})
    return resolve_plan(asked, parse_recipe(recipe or RECIPE), target, source=SourceSpec(path=str(TORCHEXT)),
                        source_sha256=source_sha256, build_env={}, install_python=None,
                        environ=environ or {"PATH": "/usr/bin"}, gated=True, toolkits=[toolkit],
                        compilers=[compiler])


def test_a_plan_from_a_described_machine() -> None:
    resolved = plan()
    assert resolved.version == "0.1.0" and [str(a) for a in resolved.archs] == ["86"]
    assert resolved.env["TORCH_CUDA_ARCH_LIST"] == "8.6" and resolved.env["UNIT_ARCHS"] == "86"
    assert resolved.env["CUDA_HOME"] == "/opt/cuda" and resolved.env["CXX"] == "/usr/bin/g++"
    assert resolved.cxx_std == "c++20"  # torch 2.14's headers
    assert resolved.local_version == "cu130torch2.14.1cxx11abiTRUE.sm86"
    assert resolved.requirement_rules().drop == {"torch"}


def test_refusals_happen_in_planning() -> None:
    with pytest.raises(ToolchainError, match="cannot target sm_89"):
        plan({"archs": ("89",)})
    with pytest.raises(ToolchainError, match="CUDA majors must match"):
        plan(toolkit=dataclasses.replace(TOOLKIT, version="12.8.93"), request={"cuda": "12.8"})
    with pytest.raises(RequirementError, match="needs cuda >=99"):
        plan(recipe={**RECIPE, "requires": {"cuda": ">=99"}})


def test_the_jobs_setting_is_a_cap_with_its_origin() -> None:
    capped = plan({"jobs": 1, "jobs_origin": "environment variable MAX_JOBS"}).jobs
    assert capped.jobs == 1
    assert "capped at 1 by environment variable MAX_JOBS" in capped.reason or capped.cores == 1


# Each entry changes one input that can change the binary; each must change the key.
CHANGES_THE_BINARY = {
    "version": {"request": {"version": "0.2.0"}},
    "source": {"source_sha256": "b" * 64},
    "torch": {"target": dataclasses.replace(TARGET, torch="2.14.0+cu130")},
    "torch's CUDA": {"target": dataclasses.replace(TARGET, torch_cuda="13.1"), "request": {"cuda": "13.0"}},
    "python": {"target": dataclasses.replace(TARGET, python_tag="cp312")},
    "ABI": {"target": dataclasses.replace(TARGET, cxx11_abi=False)},
    "toolkit": {"toolkit": dataclasses.replace(TOOLKIT, version="13.0.89")},
    "archs": {"request": {"archs": ("86", "90")}},
    "PTX": {"request": {"archs": ("86+PTX",)}},
    "host compiler": {"compiler": dataclasses.replace(GCC, major=13)},
    "variant": {"request": {"variants": ("fast=off",)}},
    "recipe env": {"recipe": {**RECIPE, "build": {**RECIPE["build"], "env": {"UNIT_ARCHS": "{archs_comma}"}}}},
    "recipe deps": {"recipe": {**RECIPE, "deps": {"drop": ["torch", "numpy"]}}},
    "backend": {"recipe": {**RECIPE, "backend": "scikit-build"}},
}
# ... and these cannot change it, so they must not change the key.
LEAVES_THE_BINARY = {
    "jobs": {"request": {"jobs": 1}},
    "memory budget": {"request": {"memory_budget": 3.0}},
    "description": {"recipe": {**RECIPE, "description": "other words"}},
    "job memory": {"recipe": {**RECIPE, "build": {**RECIPE["build"], "job_memory_gb": 7}}},
    "toolkit path": {"toolkit": dataclasses.replace(TOOLKIT, root=Path("/elsewhere"),
                                                    nvcc=Path("/elsewhere/bin/nvcc"))},
    "python path": {"target": dataclasses.replace(TARGET, python_exe=Path("/other/python"))},
    "a variant at its default": {"request": {"variants": ("fast=on",)}},
}


@pytest.mark.parametrize("change", CHANGES_THE_BINARY, ids=str)
def test_every_input_of_the_binary_is_in_the_key(change: str) -> None:
    assert plan(**CHANGES_THE_BINARY[change]).key != plan().key


@pytest.mark.parametrize("change", LEAVES_THE_BINARY, ids=str)
def test_what_cannot_change_the_binary_is_not_in_the_key(change: str) -> None:
    assert plan(**LEAVES_THE_BINARY[change]).key == plan().key


def test_a_user_recipe_of_a_shipped_name_wins(tmp_path: Path) -> None:
    shipped = RecipeBook().available()["causal-conv1d"]
    mine = tmp_path / "causal-conv1d.toml"
    mine.write_text(shipped.read_text().replace("Dao-AILab's causal", "my own causal"))
    book = RecipeBook((tmp_path,))
    assert book.available()["causal-conv1d"] == mine
    assert book.origin(mine) == str(tmp_path) and book.origin(shipped) == "shipped"
    recipe = book.load("causal-conv1d")
    assert recipe.description.startswith("my own") and recipe.patches  # its patches found beside the shipped ones
