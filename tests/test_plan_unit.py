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
                    cuda_available=False, gpu_capabilities=(), libc="glibc 2.36")
TOOLKIT = Toolkit(root=Path("/opt/cuda"), nvcc=Path("/opt/cuda/bin/nvcc"), version="13.0.88",
                  archs=("75", "80", "86", "90", "100", "120"))
GCC = HostCompiler(cc="/usr/bin/gcc", cxx="/usr/bin/g++", major=12, version="12.2.0")
ENVIRON = {"PATH": "/usr/bin", "HOME": "/root"}
RECIPE: dict[str, Any] = {
    "name": "unit-ext", "backend": "torch-ext", "default_version": "0.1.0", "description": "a unit test",
    "versions": {"0.1.0": {"source": {"path": str(TORCHEXT)}}, "0.2.0": {"source": {"path": str(TORCHEXT)}}},
    "build": {"job_memory_gb": 1, "env": {"UNIT_ARCHS": "{archs}"}, "requirements": ["setuptools"]},
    "deps": {"drop": ["torch"]},
    "variants": {"fast": {"choices": ["on", "off"], "default": "on", "env": {"UNIT_FAST": "0"},
                          "defines": ["UNIT_SLOW"]}},
    "cc": {"outputs": {"libunit.so": ["unit.c"]}, "flags": ["-O3", "-shared"], "package": "unit"},
}
CC_RECIPE = {**RECIPE, "backend": "cc"}


def plan(request: dict[str, Any] | None = None, *, recipe: dict[str, Any] | None = None,
         target: TargetInfo = TARGET, toolkit: Toolkit = TOOLKIT, compiler: HostCompiler = GCC,
         source_sha256: str = "a" * 64, environ: dict[str, str] | None = None) -> Plan:
    asked = Request(**{"recipe": "unit-ext", "archs": ("86",), **(request or {})})
    return resolve_plan(asked, parse_recipe(recipe or RECIPE), target, source=SourceSpec(path=str(TORCHEXT)),
                        source_sha256=source_sha256, build_env={}, install_python=None,
                        environ=ENVIRON if environ is None else environ, gated=True, toolkits=[toolkit],
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
    "host compiler": {"compiler": dataclasses.replace(GCC, major=13, version="13.1.0")},
    "host compiler's patch release": {"compiler": dataclasses.replace(GCC, version="12.2.1")},
    "glibc": {"target": dataclasses.replace(TARGET, libc="glibc 2.35")},
    "CFLAGS": {"environ": {**ENVIRON, "CFLAGS": "-O0"}},
    "CXXFLAGS": {"environ": {**ENVIRON, "CXXFLAGS": "-DNDEBUG"}},
    "NVCC_APPEND_FLAGS": {"environ": {**ENVIRON, "NVCC_APPEND_FLAGS": "--use_fast_math"}},
    "NVCC_PREPEND_FLAGS": {"environ": {**ENVIRON, "NVCC_PREPEND_FLAGS": "-G"}},
    "CPATH": {"environ": {**ENVIRON, "CPATH": "/opt/other/include"}},
    "LIBRARY_PATH": {"environ": {**ENVIRON, "LIBRARY_PATH": "/opt/other/lib"}},
    "CMAKE_ARGS": {"environ": {**ENVIRON, "CMAKE_ARGS": "-DFOO=1"}},
    "[cc] flags": {"recipe": {**CC_RECIPE, "cc": {**RECIPE["cc"], "flags": ["-O2", "-shared"]}}},
    "[cc] outputs": {"recipe": {**CC_RECIPE, "cc": {**RECIPE["cc"], "outputs": {"libunit.so": ["other.c"]}}}},
    "build requirements": {"recipe": {**RECIPE, "build": {**RECIPE["build"], "requirements": ["setuptools<70"]}}},
    "nvcc threads": {"recipe": {**RECIPE, "build": {**RECIPE["build"], "nvcc_threads": 4}}},
    "variant": {"request": {"variants": ("fast=off",)}},
    "a chosen variant's definition": {"request": {"variants": ("fast=off",)}, "recipe": {
        **RECIPE, "variants": {"fast": {**RECIPE["variants"]["fast"], "defines": ["UNIT_SLOWER"]}}}},
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
    "MAX_JOBS": {"environ": {**ENVIRON, "MAX_JOBS": "1"}},
    "an unknown variable": {"environ": {**ENVIRON, "FOO": "1"}},
    "a passed-through variable": {"environ": {**ENVIRON, "HOME": "/home/other", "https_proxy": "http://p:3128"}},
    "PATH": {"environ": {**ENVIRON, "PATH": "/opt/bin:/usr/bin"}},
    "a variable builder sets itself": {"environ": {**ENVIRON, "TORCH_CUDA_ARCH_LIST": "8.0", "CC": "clang"}},
    "LD_LIBRARY_PATH (dropped)": {"environ": {**ENVIRON, "LD_LIBRARY_PATH": "/opt/cuda/lib64"}},
    "[cc] flags of a torch-ext build": {"recipe": {**RECIPE, "cc": {**RECIPE["cc"], "flags": ["-O0"]}}},
    "requires": {"recipe": {**RECIPE, "requires": {"cuda": ">=12"}}},
    "verify": {"recipe": {**RECIPE, "verify": {"imports": ["other"]}}},
    "another version's source": {"recipe": {**RECIPE, "versions": {
        **RECIPE["versions"], "0.2.0": {"source": {"path": "/elsewhere"}}}}},
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


def test_the_build_environment_is_the_table_and_the_plan() -> None:
    environ = {**ENVIRON, "CFLAGS": "-O0", "FOO": "1", "https_proxy": "http://proxy:3128", "MAX_JOBS": "1",
               "TORCH_CUDA_ARCH_LIST": "8.0", "LD_LIBRARY_PATH": "/x", "LC_ALL": "C.UTF-8",
               "PIP_CONFIG_SETTINGS": "a=b"}
    resolved = plan(environ=environ)
    inherited = resolved.inherited
    assert inherited.keyed == {"CFLAGS": "-O0"}
    assert inherited.passed == {"HOME": "/root", "https_proxy": "http://proxy:3128", "LC_ALL": "C.UTF-8",
                                "PATH": "/usr/bin"}
    assert set(inherited.dropped) == {"MAX_JOBS", "TORCH_CUDA_ARCH_LIST", "LD_LIBRARY_PATH", "PIP_CONFIG_SETTINGS"}
    assert inherited.dropped["TORCH_CUDA_ARCH_LIST"].startswith("builder sets it")
    assert inherited.ignored == 1  # FOO
    build = {**inherited.for_build(), **resolved.env}
    assert "FOO" not in build and "LD_LIBRARY_PATH" not in build and build["TORCH_CUDA_ARCH_LIST"] == "8.6"
    assert build["CFLAGS"] == "-O0" and build["PATH"] == "/opt/cuda/bin:/usr/bin"
    assert build["SOURCE_DATE_EPOCH"] == "315532800"
    assert resolved.to_json()["environment"]["in_key"] == {"CFLAGS": "-O0"}
    assert "https_proxy" in resolved.to_json()["environment"]["passed"]
    assert "proxy:3128" not in str(resolved.to_json()) and "proxy:3128" not in str(resolved.provenance("0"))


def test_variant_defines_go_on_top_of_the_users_flags() -> None:
    resolved = plan({"variants": ("fast=off",)}, environ={**ENVIRON, "CFLAGS": "-O0"})
    assert resolved.env["CFLAGS"] == "-O0 -DUNIT_SLOW"
    assert resolved.env["CXXFLAGS"] == resolved.env["NVCC_APPEND_FLAGS"] == "-DUNIT_SLOW"


def test_a_flag_variable_the_recipe_sets_is_not_taken_from_the_user() -> None:
    recipe = {**RECIPE, "build": {**RECIPE["build"], "env": {"CFLAGS": "-O2"}}}
    resolved = plan(recipe=recipe, environ={**ENVIRON, "CFLAGS": "-O0"})
    assert resolved.inherited.keyed == {} and "CFLAGS" in resolved.inherited.dropped
    assert resolved.key == plan(recipe=recipe).key


def test_the_best_platform_tag_is_this_machines_glibc() -> None:
    assert plan().best_platform_tag == "manylinux_2_36_x86_64"
    assert plan(target=dataclasses.replace(TARGET, libc=None)).best_platform_tag == "linux_x86_64"


def test_the_readme_shows_the_table_as_it_is() -> None:
    from builder.planning.environment import markdown_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "README's build environment table differs: paste markdown_table()"
