"""CUDA 13.0 from NVIDIA's PyPI wheels: real pip, real nvcc, no /usr/local/cuda in sight.

One provisioning per module (about 105 MB of wheels) serves every test; the tests then ask the
provisioned nvcc to compile a kernel for sm_86 and check the cubin with cuobjdump.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import ToolchainError
from builder.planning.provision_pypi import provision_from_pypi, provisioned_roots
from builder.planning.toolchain import probe_toolkit

KERNEL = """\
#include <cuda_runtime.h>
#include <cuda/std/cstdint>
__global__ void add(float* a, const float* b, cuda::std::int32_t n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i];
}
extern "C" int launch(float* a, const float* b, int n) {
    add<<<(n + 255) / 256, 256>>>(a, b, n);
    return static_cast<int>(cudaGetLastError());
}
"""


@pytest.fixture(scope="module")
def clean_env() -> Iterator[dict[str, str]]:
    """This process's environment without CUDA_HOME/CUDA_PATH and without /usr/local/cuda*/bin on PATH."""
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not p.startswith("/usr/local/cuda"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CUDA_HOME", raising=False)
        mp.delenv("CUDA_PATH", raising=False)
        mp.setenv("PATH", path)
        yield dict(os.environ)


@pytest.fixture(scope="module")
def toolchains(tmp_path_factory: pytest.TempPathFactory, clean_env: dict[str, str]) -> Path:
    return tmp_path_factory.mktemp("toolchains")


@pytest.fixture(scope="module")
def root(toolchains: Path) -> Path:
    return provision_from_pypi("13.0", toolchains, log_path=toolchains.parent / "provision.log")


def _nvcc(root: Path, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(root / "bin" / "nvcc"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_probe_finds_cuda_13_0(root: Path, toolchains: Path) -> None:
    toolkit = probe_toolkit(root)
    assert toolkit is not None
    assert toolkit.root == root == toolchains / "13.0"
    assert toolkit.version.startswith("13.0.")
    assert "86" in toolkit.archs
    assert (root / "lib64" / "libcudart.so").resolve() == (root / "lib" / "libcudart.so.13").resolve()
    assert (root / "nvvm" / "bin" / "cicc").is_file()
    assert provisioned_roots(toolchains) == [root]


def test_compiles_sm86_shared_object(root: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    (tmp_path / "x.cu").write_text(KERNEL)
    args = ["-gencode", "arch=compute_86,code=sm_86", "-shared", "-Xcompiler", "-fPIC", "x.cu", "-o", "x.so"]
    built = _nvcc(root, *args, cwd=tmp_path, env=clean_env)
    assert built.returncode == 0, built.stderr
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        pytest.skip("cuobjdump comes from triton, which is not installed")
    cuobjdump = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    listed = subprocess.run([str(cuobjdump), "--list-elf", "x.so"], cwd=tmp_path, capture_output=True, text=True,
                            check=True, timeout=60)
    assert "sm_86" in listed.stdout, listed.stdout


def test_uses_only_its_own_tree(root: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    """nvcc's TOP is the provisioned root, and every CUDA header a kernel pulls in comes from it."""
    (tmp_path / "x.cu").write_text(KERNEL)
    dry = _nvcc(root, "-v", "--dryrun", "-arch=sm_86", "-c", "x.cu", "-o", "x.o", cwd=tmp_path, env=clean_env)
    top = next(line for line in dry.stderr.splitlines() if line.startswith("#$ TOP="))
    assert Path(top.removeprefix("#$ TOP=").strip()).resolve() == root.resolve()
    assert "/usr/local/cuda" not in dry.stderr
    deps = _nvcc(root, "-M", "-arch=sm_86", "x.cu", cwd=tmp_path, env=clean_env)
    assert deps.returncode == 0, deps.stderr
    headers = deps.stdout.replace("\\\n", " ").split()
    assert any(h.endswith("/cuda_runtime_api.h") and h.startswith(str(root)) for h in headers)
    assert any("/cccl/cuda/std/" in h and h.startswith(str(root)) for h in headers)
    assert not [h for h in headers if "/usr/local/cuda" in h]


def test_second_call_reuses_root(root: Path, toolchains: Path, tmp_path: Path) -> None:
    marker = next(root.glob(".builder-*"))
    before = marker.stat().st_mtime_ns
    log = tmp_path / "again.log"
    assert provision_from_pypi("13.0", toolchains, log_path=log) == root
    assert not log.exists(), "a second call ran pip"
    assert marker.stat().st_mtime_ns == before


def test_failed_install_leaves_nothing(tmp_path: Path, clean_env: dict[str, str]) -> None:
    log = tmp_path / "fail.log"
    with pytest.raises(ToolchainError, match=r"could not install CUDA 13\.0\.999"):
        provision_from_pypi("13.0.999", tmp_path / "tc", log_path=log)
    assert not (tmp_path / "tc" / "13.0.999").exists()
    assert not list((tmp_path / "tc").glob(".tmp-*"))
    assert provisioned_roots(tmp_path / "tc") == []
    assert "cuda-toolkit==13.0.999.*" in log.read_text()


@pytest.mark.parametrize("version", ["12.4", "11.8"])
def test_cu12_and_cu11_are_refused(version: str, tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="only ptxas") as info:
        provision_from_pypi(version, tmp_path, log_path=tmp_path / "log")
    assert info.value.hint is not None and "runfile" in info.value.hint and "11.8" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_unknown_component_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError, match="unknown toolkit component"):
        provision_from_pypi("13.0", tmp_path, log_path=tmp_path / "log", components=("core", "cudnn"))
