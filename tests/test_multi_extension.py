"""A fixture shaped like autoawq-kernels (several CUDAExtensions from one setup.py, its own
gencode lists, one extension for Ampere and later only, a torch pin from the build env): built
for sm_86 through the real pipeline with the recipe's patch that builds the extensions at once,
each extension holding exactly sm_86, the pin rewritten."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, builder_json, make_venv, running_torch_release
from tests.test_costs import most_at_once

EXTENSIONS = ["awqlike_ext", "exllike_ext", "awqlike_v2_ext"]


@pytest.mark.slow  # three torch-header translation units: about 3 minutes on 2 cores, two at a time
def test_several_extensions_hold_exactly_the_asked_arch(tmp_path: Path) -> None:
    recipe = tmp_path / "multi-ext.toml"
    recipe.write_text(textwrap.dedent(f"""\
        name = "multi-ext"
        backend = "torch-ext"
        default_version = "0.1.0"
        [versions."0.1.0"]
        source = {{ path = "{FIXTURES / 'multiext'}" }}
        [build]
        job_memory_gb = 1
        [deps]
        pin_to_target = ["torch"]
        rewrite = ["setup.py"]
        [[patches]]
        file = "autoawq-kernels/0.0.9-extensions-at-once.patch"
        [verify]
        imports = {EXTENSIONS}
        extensions = {EXTENSIONS}
        """))
    plan = builder_json("plan", str(recipe), "--arch", "86", "--cache", str(tmp_path / "c"))
    assert plan["pin_rewrites"] == [f"setup.py: torch>={{TORCH_VERSION}} -> torch=={running_torch_release()}"]
    venv = make_venv(tmp_path / "venv")
    result = builder_json("build", str(recipe), "--arch", "86", "--python", str(venv), "--cache", str(tmp_path / "c"),
                          "--jobs", "2")
    assert result["verified"]["cubins"] == {name: ["86"] for name in EXTENSIONS}
    # One file each: built one extension after another, no two would ever compile at once.
    compiles = builder_json("stats", str(recipe), "--cache", str(tmp_path / "c"), "--top", "10")[0]["slowest"]
    assert len(compiles) == 3 and most_at_once(compiles) == 2  # the build's 2 jobs, not 3
    requires = subprocess.run([venv, "-c", "import importlib.metadata as m; print(m.requires('multi-ext'))"],
                              capture_output=True, text=True, check=True).stdout
    assert requires.strip() == f"['torch=={running_torch_release()}']"
