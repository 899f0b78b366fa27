"""CUDA's math library headers for torch extensions (builder/building/cuda_libs.py): torch's own
ATen/cuda/CUDAContext.h includes cusparse.h, cublas_v2.h and cublasLt.h, which a compiler-only
toolkit (this machine's /usr/local/cuda, NVIDIA's nvcc wheels) lacks and torch's nvidia wheels
bring. A real build of an extension including it, and where the headers are taken from."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from builder.building.cuda_libs import TORCH_HEADERS, header_env
from builder.planning.toolchain import Toolkit
from tests.conftest import FIXTURES, builder_json

RECIPE = FIXTURES / "atenctx" / "atenctx.toml"


def toolkit(root: Path) -> Toolkit:
    return Toolkit(root=root, nvcc=root / "bin" / "nvcc", version="13.0.88", archs=("86",))


def test_headers_the_toolkit_lacks_come_from_torchs_wheels_after_the_toolkits_own(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    (bare / "include").mkdir(parents=True)
    env = header_env(toolkit(bare), Path(sys.executable), {"CPATH": "/users/own"})
    folders = env["CPATH"].split(":")
    assert folders[-1] == "/users/own"  # the user's own CPATH stays, after
    assert all((Path(folders[0]) / name).is_file() for name in TORCH_HEADERS), folders
    assert "site-packages/nvidia/" in folders[0]  # torch's CUDA wheels, the release torch was built with

    full = tmp_path / "full"
    (full / "include").mkdir(parents=True)
    for name in TORCH_HEADERS:
        (full / "include" / name).write_text("")
    assert header_env(toolkit(full), Path(sys.executable), {}) == {}  # a full toolkit: nothing added


def test_an_extension_including_aten_cuda_context_builds_on_a_compiler_only_toolkit(tmp_path: Path) -> None:
    """On this machine's toolkit (no cusparse.h) the build stopped at `fatal error: cusparse.h: No
    such file or directory`; where the toolkit has the headers it builds either way."""
    built = builder_json("build", str(RECIPE), "--arch", "86", "--no-install", "--cache", str(tmp_path / "cache"))
    with zipfile.ZipFile(built["wheel"]) as wheel:
        assert any(name.startswith("atenctx_cuda") and name.endswith(".so") for name in wheel.namelist())
