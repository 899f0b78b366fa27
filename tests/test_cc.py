"""The `cc` backend on a model directory shaped like ChatGLM-6B int4's (the project's own C files,
tests/fixtures/int4model): real gcc with OpenMP, libraries installed beside quantization.py,
checked against numpy through ctypes, and undone byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.store.cache import Cache
from tests.conftest import FIXTURES, builder_json, label, make_venv, read_only_dir, run_builder

MODEL = FIXTURES / "int4model"
LIBRARIES = ("quantization_kernels.so", "quantization_kernels_parallel.so")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    directory = tmp_path / "chatglm-6b-int4"
    shutil.copytree(MODEL, directory)
    return directory


def build(model: Path, cache: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_builder("build", "chatglm-cpu-kernels", "--source", str(model), "--cache", str(cache), *extra,
                       env=env)


def test_kernels_install_beside_the_model_agree_with_numpy_and_uninstall_restores(model: Path,
                                                                                 tmp_path: Path) -> None:
    (model / "quantization_kernels.so").write_bytes(b"the model's own, compiled at load time")
    before = snapshot(model)
    result = builder_json("build", "chatglm-cpu-kernels", "--source", str(model), "--cache", str(tmp_path / "c"))
    assert result["installed_into"] == str(model)
    assert result["verified"] == {"artifacts": [str(model / n) for n in LIBRARIES], "artifact_check": "passed"}
    assert Path(result["wheel"]).name.startswith(f"chatglm_cpu_kernels-1.0+{label()}-py3-none-")
    nm = subprocess.run(["nm", "-D", str(model / "quantization_kernels_parallel.so")], capture_output=True,
                        text=True, check=True).stdout
    assert "GOMP_parallel" in nm and "extract_int4_weight_to_float" in nm  # really OpenMP

    again = builder_json("build", "chatglm-cpu-kernels", "--source", str(model), "--cache", str(tmp_path / "c"))
    assert again["cache_hit"] is True and again["cache_key"] == result["cache_key"]  # installs don't change the key

    run_builder("uninstall", "chatglm-cpu-kernels", "--dir", str(model), check=True)
    assert snapshot(model) == before


def test_a_compiler_without_openmp_is_named_before_compiling(model: Path, tmp_path: Path) -> None:
    wrapper = tmp_path / "cc-without-openmp"
    wrapper.write_text(textwrap.dedent("""\
        #!/bin/sh
        for arg in "$@"; do
          [ "$arg" = -fopenmp ] && { echo "cc: error: unrecognized command-line option '-fopenmp'" >&2; exit 1; }
        done
        exec gcc "$@"
        """))
    wrapper.chmod(0o755)
    before = snapshot(model)
    result = build(model, tmp_path / "c", env={"BUILDER_CC": str(wrapper)})
    assert result.returncode == 4, result.stderr
    assert f"the C compiler {wrapper} cannot build with -fopenmp" in result.stderr
    assert "unrecognized command-line option '-fopenmp'" in result.stderr
    assert snapshot(model) == before and Cache(tmp_path / "c").entries() == []


def test_a_model_dir_without_the_kernel_sources(model: Path, tmp_path: Path) -> None:
    (model / "quantization_kernels_parallel.c").unlink()
    result = build(model, tmp_path / "c")
    assert result.returncode == 6 and "has no quantization_kernels_parallel.c" in result.stderr
    result = run_builder("build", "chatglm-cpu-kernels", "--cache", str(tmp_path / "c"))
    assert result.returncode == 6 and "pass --source with a ChatGLM-6B int4 model directory" in result.stderr


@pytest.fixture
def read_only(model: Path) -> Iterator[Path]:
    with read_only_dir(model):
        yield model


def test_a_read_only_model_dir_changes_nothing(read_only: Path, tmp_path: Path) -> None:
    before = snapshot(read_only)
    result = build(read_only, tmp_path / "c")
    assert result.returncode == 10, result.stderr
    assert f"{read_only} is not writable; nothing was changed" in result.stderr
    assert snapshot(read_only) == before


def test_artifacts_go_to_install_dir_and_no_dir_is_a_clear_error(model: Path, tmp_path: Path) -> None:
    (model / "quantization.py").unlink()
    result = build(model, tmp_path / "c")
    assert result.returncode == 2 and "pass --install-dir DIR" in result.stderr
    elsewhere = tmp_path / "kernels"
    elsewhere.mkdir()
    build(model, tmp_path / "c", "--install-dir", str(elsewhere)).check_returncode()
    assert sorted(p.name for p in elsewhere.iterdir()) == [".builder", *LIBRARIES]


def test_install_mode_wheel_builds_a_pybind11_module_that_agrees_with_numpy(model: Path, tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv")
    artifacts = builder_json("plan", "chatglm-cpu-kernels", "--source", str(model), "--cache", str(tmp_path / "c"))
    result = builder_json("build", "chatglm-cpu-kernels", "--source", str(model), "--install-mode", "wheel",
                          "--python", str(venv), "--cache", str(tmp_path / "c"))
    assert result["verified"]["module_check"] == "passed" and result["installed_into"] == str(venv)
    assert result["cache_key"] != artifacts["cache_key"] and artifacts["backend"] == "cc"
    code = ("import chatglm_cpu_kernels as k, numpy as n; "
            "print(k.extract_int8_weight_to_float(n.ones((2, 3), n.int8), n.full(2, 0.5, n.float32)).sum())")
    assert subprocess.run([venv, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "3.0"
    refused = run_builder("build", "autoawq", "--no-companions", "--install-mode", "artifacts",
                          "--cache", str(tmp_path / "c"))
    assert refused.returncode == 2 and "builds no libraries to install as artifacts" in refused.stderr
