"""The `make` and `cmake` backends on tests/fixtures/bnbfix, a package shaped like bitsandbytes
(the project's own files): real nvcc builds of its Makefile era and its CMake era against
cuBLAS/cuSPARSE from torch's nvidia wheels, exact cubins, the libraries installed into an
installed bnbfix and restored byte for byte, and the refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.store.cache import Cache
from tests.conftest import FIXTURES, builder_json, label, make_venv, read_only_dir, run_builder

RECIPE = FIXTURES / "bnbfix.toml"


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def package_dir(venv: Path) -> Path:
    return next((venv.parent.parent / "lib").glob("python3*/site-packages/bnbfix"))


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    return make_venv(tmp_path / "venv")


def build(cache: Path, *args: str, recipe: Path = RECIPE) -> dict:
    return builder_json("build", str(recipe), "--cache", str(cache), *args)


@pytest.fixture(scope="module")
def make_era_sm80(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the one build of the Makefile era (0.41.0) for sm_80 that two tests install;
    each takes a copy (`cache_with`)."""
    cache = tmp_path_factory.mktemp("make-era-sm80") / "c"
    build(cache, "--version", "0.41.0", "--arch", "80", "--no-install")
    return cache


def cache_with(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns("locks", "build", "staging"))
    return dest


def test_makefile_era_libraries_replace_an_installed_package_and_uninstall_restores(
        venv: Path, tmp_path: Path, make_era_sm80: Path) -> None:
    cache = cache_with(make_era_sm80, tmp_path / "c")
    first = build(cache, "--version", "0.41.0", "--arch", "80", "--python", str(venv))  # found in the cache
    assert first["installed_into"] == str(venv)  # not installed yet: a complete wheel
    assert first["verified"]["cubins"] == {"libbnbfix_cuda130.so": ["80"], "libbnbfix_cuda130_nocublaslt.so": ["80"]}
    assert Path(first["wheel"]).name.startswith(f"bnbfix-0.41.0+{label('80')}-")
    folder = package_dir(venv)
    before = snapshot(folder)

    second = build(cache, "--version", "0.41.0", "--arch", "86", "--python", str(venv))
    assert second["installed_into"] == str(folder)  # bnbfix is installed now: artifacts by default
    libraries = [str(folder / "libbnbfix_cuda130.so"), str(folder / "libbnbfix_cuda130_nocublaslt.so")]
    assert second["verified"]["artifacts"] == libraries
    assert second["verified"]["cubins"] == {"libbnbfix_cuda130.so": ["86"], "libbnbfix_cuda130_nocublaslt.so": ["86"]}
    assert second["verified"]["main_module"] == {"exit": 0, "loaded": [libraries[0]], "gpu": "none visible"}
    log = Path(second["log"]).read_text()
    assert "make -j" in log and "cuda11x_nomatmul" in log
    assert "CC_cublasLt111=-gencode=arch=compute_86,code=sm_86" in log
    assert second["costs"]["files"] == 2  # nvcc -dc of both .cu files, once per target, through the gate

    run_builder("uninstall", str(RECIPE), "--artifacts", "--python", str(venv), check=True)
    assert snapshot(folder) == before


def test_cmake_era_builds_the_requested_arch_and_one_key_serves_both_install_modes(venv: Path,
                                                                                  tmp_path: Path) -> None:
    cache = tmp_path / "c"
    plans = [builder_json("plan", str(RECIPE), "--arch", "86", "--cache", str(cache), "--install-mode", mode)
             for mode in ("wheel", "artifacts")]
    assert plans[0]["cache_key"] == plans[1]["cache_key"] and plans[0]["backend"] == "cmake"
    configure = " ".join(plans[0]["commands"][0])
    assert "-DCOMPUTE_BACKEND=cuda" in configure and "-DCOMPUTE_CAPABILITY=86" in configure
    assert "-DCMAKE_CUDA_ARCHITECTURES=86-real" in configure and "-G Ninja" in configure

    result = build(cache, "--arch", "86", "--python", str(venv))
    assert result["verified"]["cubins"] == {"libbnbfix_cuda130.so": ["86"]}
    assert result["verified"]["main_module"]["loaded"] == [str(package_dir(venv) / "libbnbfix_cuda130.so")]
    assert result["plan"]["version"] == "0.49.0" and Path(result["wheel"]).name.startswith("bnbfix-0.49.0+")
    stats = builder_json("stats", "bnbfix", "--cache", str(cache))[0]  # CMake's launchers ran the gate
    assert {f["file"] for f in stats["slowest"]} >= {"csrc/ops.cu", "csrc/kernels.cu"}


def broken_copy(tmp_path: Path, *, targets: str | None = None, break_kernel: bool = False) -> Path:
    """The fixture and its recipe copied, with a compile error or another make target list."""
    shutil.copytree(FIXTURES / "bnbfix", tmp_path / "src" / "bnbfix")
    if break_kernel:
        kernels = tmp_path / "src" / "bnbfix" / "csrc" / "kernels.cu"
        kernels.write_text(kernels.read_text() + "\nint broken( { return 0; }\n")
    text = RECIPE.read_text()
    if targets is not None:
        text = text.replace('targets = ["cuda11x", "cuda11x_nomatmul"]', f"targets = {targets}")
    recipe = tmp_path / "src" / "bnbfix.toml"
    recipe.write_text(text)
    return recipe


def test_a_build_failing_midway_installs_nothing_and_caches_nothing(venv: Path, tmp_path: Path,
                                                                    make_era_sm80: Path) -> None:
    build(cache_with(make_era_sm80, tmp_path / "first"), "--version", "0.41.0", "--arch", "80", "--python", str(venv))
    before = snapshot(package_dir(venv))
    recipe = broken_copy(tmp_path, break_kernel=True)
    result = run_builder("build", str(recipe), "--version", "0.41.0", "--arch", "86", "--python", str(venv),
                         "--cache", str(tmp_path / "c"))
    assert result.returncode == 8, result.stderr
    assert "kernels.cu" in result.stderr and "error" in result.stderr
    assert snapshot(package_dir(venv)) == before and Cache(tmp_path / "c").entries() == []


def test_a_target_the_makefile_lacks_is_named_before_compiling(tmp_path: Path) -> None:
    recipe = broken_copy(tmp_path, targets='["cuda11x", "cuda99x"]')
    result = run_builder("build", str(recipe), "--version", "0.41.0", "--arch", "86", "--no-install",
                         "--cache", str(tmp_path / "c"))
    assert result.returncode == 8 and "the Makefile in src has no target 'cuda99x'" in result.stderr
    assert not list((tmp_path / "c").rglob("*.o"))  # nothing compiled, not even cuda11x
    assert Cache(tmp_path / "c").entries() == []


def test_artifacts_without_an_installed_package_and_a_missing_toolkit(venv: Path, tmp_path: Path) -> None:
    result = run_builder("build", str(RECIPE), "--arch", "86", "--install-mode", "artifacts",
                         "--python", str(venv), "--cache", str(tmp_path / "c"))
    assert result.returncode == 10 and f"{venv} has no bnbfix installed to put the libraries into" in result.stderr
    assert Cache(tmp_path / "c").entries() == []  # refused before compiling
    result = run_builder("build", str(RECIPE), "--arch", "86", "--cuda", "12.4", "--cache", str(tmp_path / "c"))
    assert result.returncode == 4 and "CUDA 12.4" in result.stderr and len(result.stderr.strip().splitlines()) <= 3


def test_a_read_only_site_packages_changes_nothing(venv: Path, tmp_path: Path) -> None:
    build(tmp_path / "c", "--arch", "80", "--python", str(venv))
    folder = package_dir(venv)
    before = snapshot(folder)
    with read_only_dir(folder):
        result = run_builder("build", str(RECIPE), "--arch", "86", "--python", str(venv),
                             "--cache", str(tmp_path / "c"))
        assert result.returncode == 10 and f"{folder} is not writable; nothing was changed" in result.stderr
    assert snapshot(folder) == before
    assert [e.meta["plan"]["archs"] for e in Cache(tmp_path / "c").entries()] == [["80"]]
