"""The real upstream recipes: sdists from PyPI, their patches, their plans, and real builds.

The sdists are fetched once per session into a shared cache (sha256 checked by builder).
Full builds are `slow`: causal-conv1d for sm_86 (~5 min on 2 cores) and one flash-attn kernel
file compiled with the planned flags (the whole package takes hours on two cores).
"""

from __future__ import annotations

import json
import py_compile
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.building.patching import apply_patches
from builder.building.source import extract
from builder.delivery.verify import list_cubins
from builder.planning.recipe import Patch, load_recipe
from tests.conftest import builder_json, make_venv, needs_cuda_11_8, run_builder, running_torch_cuda
from tests.conftest import label as running_label
from tests.test_build_fixture import CUOBJDUMP

FACTS = {"torch": "2.14.1", "cuda": "13.0.88", "python": "3.11"}


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding every upstream sdist, downloaded by `builder fetch`."""
    cache = tmp_path_factory.mktemp("upstream-cache")
    for recipe in ("flash-attn", "causal-conv1d"):
        fetched = builder_json("fetch", recipe, "--cache", str(cache))
        assert all(Path(p).is_file() for p in fetched.values())
    return cache


@pytest.mark.parametrize(("recipe", "version"), [("flash-attn", "2.8.3.post2"), ("flash-attn", "2.8.3"),
                                                 ("flash-attn", "2.6.3"), ("causal-conv1d", "1.7.0")])
def test_every_patch_applies_to_the_real_sdist(sources: Path, tmp_path: Path, recipe: str,
                                               version: str) -> None:
    loaded = load_recipe(recipe)
    spec = loaded.versions[version]
    assert spec.file is not None
    tree = extract(sources / "sources" / spec.file, tmp_path / "src")
    patches = loaded.patches_for({**FACTS, "version": version})
    assert len(patches) == 2
    variant_files = sorted({f for v in loaded.variants.values() if v.versions.contains(version, prereleases=True)
                            for f in v.patches})  # flash-attn 2.8.3's kernel subsets, after the rest
    apply_patches(patches + tuple(Patch(file=f, path=loaded.variant_patch_paths[f]) for f in variant_files), tree)
    py_compile.compile(str(tree / "setup.py"), doraise=True)
    text = (tree / "setup.py").read_text()
    assert "BUILDER_CUDA_ARCHS" in text and "BUILDER_CXX_STD" in text


def test_flash_attn_plan_carries_gencode_and_env(sources: Path) -> None:
    plan = builder_json("plan", "flash-attn", "--cuda", running_torch_cuda(), "--arch", "86", "--cache", str(sources))
    assert plan["gencode"] == ["-gencode=arch=compute_86,code=sm_86"]
    env = plan["env"]
    assert env["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE"
    assert env["BUILDER_CUDA_ARCHS"] == env["FLASH_ATTN_CUDA_ARCHS"] == "86"
    assert env["TORCH_CUDA_ARCH_LIST"] == "8.6"
    assert env["BUILDER_CXX_STD"] == "c++20"
    assert env["CUDA_HOME"] == plan["toolkit"]["root"]
    assert int(env["MAX_JOBS"]) >= 1 and env["NVCC_THREADS"] == "2"
    assert [p["file"] for p in plan["patches"]] == ["flash-attn/2.8-any-arch.patch",
                                                     "flash-attn/2.8-cxx-std.patch"]
    assert plan["local_version"] == running_label("86")
    assert plan["dependency_rules"]["drop"] == ["torch"]
    assert "--no-build-isolation" in plan["commands"][0] and "--no-deps" in plan["commands"][0]


def test_flash_attn_refuses_an_arch_without_kernels(sources: Path) -> None:
    result = run_builder("plan", "flash-attn", "--arch", "75", "--cache", str(sources))
    assert result.returncode == 5
    assert "flash-attn has no kernels for sm_75" in result.stderr


@pytest.mark.slow
def test_causal_conv1d_builds_for_sm86_imports_and_rebuilds_byte_identical(sources: Path, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv")
    result = builder_json("build", "causal-conv1d", "--arch", "86", "--python", str(venv),
                          "--cache", str(sources))
    assert result["verified"]["cubins"] == {"causal_conv1d_cuda": ["86"]}
    assert result["installed_into"] == str(venv)
    subprocess.run([venv, "-c", "import torch, causal_conv1d; print(causal_conv1d.__version__)"],
                   check=True)
    other = tmp_path / "other-cache"  # a second cache root: the rebuild must not depend on it
    shutil.copytree(sources / "entries" / result["cache_key"], other / "entries" / result["cache_key"])
    shutil.copytree(sources / "sources", other / "sources")
    checked = run_builder("build", "causal-conv1d", "--arch", "86", "--python", str(venv), "--check",
                          "--cache", str(other), "--json")
    assert json.loads(checked.stdout)["reproducible"] is True, checked.stdout


def trimmed_flash_attn(sdist: Path, dest: Path, keep: str) -> Path:
    """The sdist with flash_api.cpp and one kernel file as its only sources (the whole package takes
    hours on two cores). `keep` must be a line the recipe's patches do not use as context."""
    tree = extract(sdist, dest)
    setup = tree / "setup.py"
    kernel = re.compile(r'^\s*"csrc/flash_attn/src/flash_\w+_sm80\.cu",\n$')
    lines = setup.read_text().splitlines(keepends=True)
    setup.write_text("".join(line for line in lines if not kernel.match(line) or keep in line))
    return tree


@pytest.mark.slow
@pytest.mark.parametrize(("version", "keep", "toolchain", "label"), [
    ("2.8.3.post2", "flash_fwd_hdim128_fp16_sm80.cu", [], None),
    ("2.8.3", "flash_fwd_hdim128_fp16_sm80.cu", [], None),
    pytest.param("2.6.3", "flash_fwd_split_hdim256_bf16_causal_sm80.cu", ["--cuda", "11.8", "--torch", "2.0.1"],
                 "cu118torch2.0.1cxx11abiFALSE.sm86",
                 marks=needs_cuda_11_8),
])
def test_one_flash_attn_kernel_compiles_with_the_planned_flags(
        sources: Path, tmp_path: Path, version: str, keep: str, toolchain: list[str], label: str | None) -> None:
    """flash_api.cpp plus one kernel file, through the real recipe, its patches and flags: with the
    default toolchain (the running torch, a toolkit of its CUDA), and with Debian's CUDA 11.8, g++-11, torch 2.0.1."""
    spec = load_recipe("flash-attn").versions[version]
    assert spec.file is not None
    tree = trimmed_flash_attn(sources / "sources" / spec.file, tmp_path / "src", keep)
    cache = tmp_path / "cache"
    shutil.copytree(sources / "sources", cache / "sources")
    result = builder_json("build", "flash-attn", "--version", version, "--source", str(tree), "--arch", "86",
                          *toolchain, "--no-install", "--cache", str(cache))
    wheel = Path(result["wheel"])
    assert wheel.name.startswith(f"flash_attn-{version}+{label or running_label('86')}-")
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.startswith("flash_attn_2_cuda") and n.endswith(".so")]
        archive.extract(name, tmp_path)
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
    assert CUOBJDUMP is not None
    assert list_cubins(CUOBJDUMP, tmp_path / name) == ["86"]
    assert "Requires-Dist: torch" not in metadata


@pytest.mark.full
@needs_cuda_11_8
def test_whole_flash_attn_under_cuda_11_8(sources: Path, tmp_path: Path) -> None:
    """The mission's example in full: every kernel of flash-attn 2.6.3 (torch 2.0.1 is the CUDA 11
    torch PyPI has; 2.8.3 needs torch >= 2.2). Hours on two cores: `make test-full`, not CI."""
    cache = tmp_path / "cache"
    shutil.copytree(sources / "sources", cache / "sources")
    result = builder_json("build", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "86",
                          "--torch", "2.0.1", "--cache", str(cache))
    assert result["verified"]["cubins"] == {"flash_attn_2_cuda": ["86"]}
