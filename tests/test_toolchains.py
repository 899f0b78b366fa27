"""Toolkits, host compilers and doctor on this machine (no GPU), with fakes only for hardware
that CI cannot have: an old driver's nvidia-smi."""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from builder.errors import ToolchainError
from builder.planning.buildpython import choose_torch_index, table_cuda
from builder.planning.compat import MIN_DRIVER_FOR_CUDA_MAJOR, cxx_standard_for_torch
from tests.conftest import (
    builder_json,
    cache_sharing_envs,
    needs_cuda_11_8,
    needs_gxx_11,
    run_builder,
    running_torch_cuda,
    running_torch_release,
)
from tests.test_bad_input import ARCHS_11_8, assert_refused, fake_toolkit


def compilers_dir(tmp_path: Path, *versions: int) -> Path:
    """A PATH entry holding only g++/gcc (the default, 12) and the g++-N given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("g++", "gcc"):
        (bin_dir / name).symlink_to(f"/usr/bin/{name}-12")
    for version in versions:
        for name in ("g++", "gcc"):
            (bin_dir / f"{name}-{version}").symlink_to(f"/usr/bin/{name}-{version}")
    for tool in ("patch", "sh", "cat", "uname", "ldconfig"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    return bin_dir


def test_doctor_on_a_machine_without_gpu() -> None:
    result = run_builder("doctor", "--json")
    report = json.loads(result.stdout)
    assert report["driver"]["running"] is False and report["driver"]["gpus"] == []
    cuda = running_torch_cuda()
    assert any(t["version"].startswith(f"{cuda}.") for t in report["toolkits"])
    texts = [v["text"] for v in report["verdicts"]]
    assert any("builds need --arch" in text for text in texts)
    assert any(text.startswith(f"torch {running_torch_release()}") and f"--cuda {cuda}" in text for text in texts)
    if ctypes.util.find_library("cuda"):  # Debian's toolkit brings libcuda1 without a kernel driver
        assert any("driver library" in text and "no GPU can be used" in text for text in texts)
    human = run_builder("doctor")
    assert "no GPU" in human.stdout and f"toolkit     CUDA {cuda}" in human.stdout


def test_doctor_flags_a_toolkit_newer_than_the_driver(tmp_path: Path) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text(textwrap.dedent("""\
        #!/bin/sh
        if [ -n "$1" ]; then echo "0, NVIDIA GeForce RTX 3090, 8.6"; exit 0; fi
        echo "| NVIDIA-SMI 470.82.01    Driver Version: 470.82.01    CUDA Version: 11.4     |"
        """))
    smi.chmod(0o755)
    result = run_builder("doctor", "--json", env={"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    report = json.loads(result.stdout)
    assert report["driver"]["version"] == "470.82.01" and report["driver"]["cuda"] == "11.4"
    assert report["driver"]["gpus"] == [{"index": 0, "name": "NVIDIA GeForce RTX 3090", "capability": "86"}]
    newer = [v for v in report["verdicts"] if "newer than the driver's CUDA 11.4" in v["text"]]
    cuda = running_torch_cuda()  # the toolkit here is torch's CUDA; its driver from builder's table
    driver = MIN_DRIVER_FOR_CUDA_MAJOR[int(cuda.split(".")[0])]
    assert any(v["text"].startswith(f"CUDA {cuda}") and driver in v["fix"] for v in newer)
    assert any("torch.cuda will not work here" in v["text"] for v in newer)
    plan = builder_json("plan", "causal-conv1d", env={"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    assert plan["archs"] == ["86"]  # no --arch: the visible GPU's capability


def test_no_toolkit_for_cuda_11_3_says_where_it_looked(tmp_path: Path) -> None:
    result = run_builder("plan", "flash-attn", "--cuda", "11.3", "--arch", "86", "--torch", "2.0.1")
    assert_refused(result, 4, "no CUDA 11.3 toolkit found", "looked in CUDA_HOME", "/usr/local/cuda-11.3")
    install = run_builder("toolchain", "install", "11.3", "--cache", str(tmp_path))
    assert_refused(install, 4, "cannot provision CUDA 11.3", "hold only ptxas")


def test_no_host_compiler_that_nvcc_11_8_accepts(tmp_path: Path) -> None:
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    path = compilers_dir(tmp_path)
    result = run_builder("plan", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "86",
                         "--torch", "2.0.1", env={"CUDA_HOME": str(cuda), "PATH": str(path)})
    assert_refused(result, 4, "nvcc 11.8 accepts gcc up to 11, found g++ 12", "apt-get install g++-11")


@needs_gxx_11
def test_a_supported_g_plus_plus_is_chosen_for_cuda_11_8(tmp_path: Path) -> None:
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    path = compilers_dir(tmp_path, 11)
    plan = builder_json("plan", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "86",
                        "--torch", "2.0.1", env={"CUDA_HOME": str(cuda), "PATH": str(path)})
    assert plan["host_compiler"]["gcc_major"] == 11
    assert plan["env"]["CC"].endswith("gcc-11") and plan["env"]["NVCC_CCBIN"].endswith("g++-11")


@needs_cuda_11_8
def test_flash_attn_plan_for_cuda_11_8_resolves_completely() -> None:
    plan = builder_json("plan", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "86",
                        "--torch", "2.0.1")
    assert plan["toolkit"]["version"].startswith("11.8") and plan["toolkit"]["root"] == "/usr"
    assert plan["host_compiler"]["gcc_major"] == 11
    assert plan["target"]["torch"] == "2.0.1" and plan["target"]["torch_cuda"] == "11.7"
    assert plan["build_env"]["kind"] == "venv" and plan["build_env"]["index_url"] is None
    assert plan["gencode"] == ["-gencode=arch=compute_86,code=sm_86"]
    assert plan["env"]["BUILDER_CXX_STD"] == "c++17" and plan["env"]["CUDA_HOME"] == "/usr"
    assert plan["env"]["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE"
    assert plan["local_version"] == "cu118torch2.0.1cxx11abiFALSE.sm86"
    assert [p["file"] for p in plan["patches"]] == ["flash-attn/2.6-any-arch.patch", "flash-attn/2.6-cxx-std.patch"]


def test_flash_attn_2_8_asked_for_refuses_torch_2_0_before_compiling(tmp_path: Path) -> None:
    """An explicit --version is strict (without it, the newest that fits is taken: test_choices.py)."""
    env = {"CUDA_HOME": str(fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8))}
    result = run_builder("plan", "flash-attn", "--version", "2.8.3", "--cuda", "11.8", "--arch", "86",
                         "--torch", "2.0.1", env=env)
    assert_refused(result, 5, "flash-attn 2.8.3 needs torch >=2.2, this build has torch 2.0.1")


def test_the_newest_torch_releases_are_planned_with_their_pypi_cuda_and_cxx_standard() -> None:
    """2.12-2.15 as their wheels' METADATA and torch/all.h say (builder/planning/compat.py)."""
    assert [table_cuda(t) for t in ("2.12.1", "2.13.0", "2.14.1", "2.15.0")] == \
        ["13.0", "13.0", "13.0", "13.2"]
    assert [cxx_standard_for_torch(t) for t in ("2.13.0", "2.14.0", "2.15.0")] == ["c++17", "c++20", "c++20"]
    assert choose_torch_index("2.15.0", "13.0", None) is None  # PyPI's CUDA 13.2 build, same major


def test_torch_index_follows_the_cuda_major_asked_for() -> None:
    assert choose_torch_index("2.7.1", "11.8", None) == "https://download.pytorch.org/whl/cu118"
    assert choose_torch_index("2.0.1", "11.8", None) is None  # PyPI's 2.0.1 is a CUDA 11 (cu117) build
    assert choose_torch_index("2.7.1", "12.8", None) is None  # PyPI's 2.7.1 is CUDA 12.6
    assert choose_torch_index("2.7.1", "11.8", "https://mirror/cu118") == "https://mirror/cu118"
    refusal = re.escape("no known torch 2.8.0 build for CUDA 11.8: PyPI's is CUDA 12.8")
    with pytest.raises(ToolchainError, match=refusal):
        choose_torch_index("2.8.0", "11.8", None)


@needs_gxx_11
def test_torch_index_is_chosen_from_the_cuda_version(tmp_path: Path) -> None:
    env = {"CUDA_HOME": str(fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)),
           "PATH": f"{compilers_dir(tmp_path, 11)}{os.pathsep}{os.environ['PATH']}"}
    cu118 = builder_json("plan", "flash-attn", "--cuda", "11.8", "--arch", "86", "--torch", "2.7.1", env=env)
    pypi = builder_json("plan", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "86",
                        "--torch", "2.0.1", env=env)
    assert cu118["build_env"]["index_url"] == "https://download.pytorch.org/whl/cu118"
    assert cu118["target"]["torch_cuda"] == "11.8" and cu118["target"]["cxx11_abi"] is True
    assert pypi["build_env"]["index_url"] is None  # PyPI's 2.0.1 is a CUDA 11 (cu117) build
    none = run_builder("plan", "flash-attn", "--cuda", "11.8", "--arch", "86", "--torch", "2.8.0", env=env)
    assert_refused(none, 4, "no known torch 2.8.0 build for CUDA 11.8", "PyPI's is CUDA 12.8", "--torch-index")


@pytest.mark.slow  # CUDA 13.0's wheels from the index, then a build
def test_cuda_13_provisioned_from_pypi_compiles_the_fixture(fixture_recipe: Path, fresh_venv: Path,
                                                           tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    installed = builder_json("toolchain", "install", "13.0", "--cache", str(cache))
    root = Path(installed["root"])
    assert root == cache / "toolchains" / "13.0" and installed["version"].startswith("13.0")
    listed = builder_json("toolchain", "list", "--cache", str(cache))
    assert {"version": installed["version"], "root": str(root), "provisioned": True,
            "archs": installed["archs"]} in listed
    log = cache / "logs" / "toolchain-13.0.log"
    pip_calls = log.read_text().count("pip install")
    again = builder_json("toolchain", "install", "13.0", "--cache", str(cache))  # already there: no pip
    assert again["root"] == str(root)
    assert log.read_text().count("pip install") == pip_calls
    result = builder_json("build", str(fixture_recipe), "--arch", "86", "--python", str(fresh_venv),
                          "--cache", str(cache), env={"CUDA_HOME": str(root)})
    assert result["plan"]["toolkit"]["root"] == str(root)
    assert result["verified"]["cubins"] == {"fixture_ext_cuda": ["86"]}
    assert f"{root}/bin/nvcc" in Path(result["log"]).read_text()


@pytest.mark.slow
@needs_cuda_11_8
def test_fixture_builds_with_cuda_11_8_and_torch_2_0_1(fixture_recipe: Path, tmp_path: Path) -> None:
    """The mission's own example, for real: Debian's nvcc 11.8, g++-11 chosen, torch 2.0.1's venv.
    torch 2.0.1's cpp_extension has no PYTORCH_NVCC; the gate still sees every compile (the ordering
    ninja puts it in front of build.ninja's `nvcc`): a record for each of the four files."""
    cache = str(cache_sharing_envs(tmp_path / "cache"))
    result = builder_json("build", str(fixture_recipe), "--cuda", "11.8", "--arch", "86", "--torch", "2.0.1",
                          "--cache", cache)
    assert result["plan"]["host_compiler"]["gcc_major"] == 11
    assert result["verified"]["cubins"] == {"fixture_ext_cuda": ["86"]}
    assert "+cu118torch2.0.1cxx11abiFALSE.sm86-" in result["wheel"]
    assert result["plan"]["split_compile"] is False  # 11.8's nvcc has no --split-compile
    [stats] = builder_json("stats", "fixture-ext", "--cache", cache)
    assert sorted(f["file"] for f in stats["slowest"]) == ["csrc/binding.cpp", "csrc/vec_add.cu",
                                                           "csrc/vec_scale.cu", "csrc/vec_sum.cu"]
    assert all(f["peak_mb"] > 0 and f["basis"] == "estimate" for f in stats["slowest"])
