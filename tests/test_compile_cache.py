"""The compile cache across a matrix's cells and a team's machines (builder/building/sccache.py
`hashed_relative`): nvcc's preprocessed text names every header by its path, and torch's headers
lie under another path in each cell (another Python's site-packages, another --torch venv) and on
each machine. A real build of an extension whose kernel file includes torch's ATen headers (the
atenctx fixture, as flash-attn's kernels do), then the same key built for an interpreter that
imports the same torch from another folder, and another key of the same sources: every device step
is found."""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import FIXTURES, builder_json, make_venv

RECIPE = FIXTURES / "atenctx" / "atenctx.toml"


def torch_elsewhere(root: Path) -> tuple[Path, Path]:
    """A venv importing this torch, and the nvidia wheels beside it, from the folder `root`/site
    (symlinks: the same files under another path); the venv's python and that folder."""
    site = root / "site"
    site.mkdir(parents=True)
    real = Path(torch.__file__).parent.parent
    for name in ("torch", "nvidia"):
        (site / name).symlink_to(real / name, target_is_directory=True)
    python = make_venv(root / "venv")
    purelib = sysconfig.get_path("purelib", vars={"base": str(root / "venv"), "platbase": str(root / "venv")})
    (Path(purelib) / "aa_torch_elsewhere.pth").write_text(f"{site}\n")  # read before make_venv's .pth
    return python, site


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fixture built once through a fresh compile cache: every step compiled and stored."""
    root = tmp_path_factory.mktemp("compile-cache")
    built = builder_json(*build_args(root / "store"), "--cache", str(root / "first"))
    assert built["sccache"]["misses"].get("PTX") == 1 and built["sccache"]["misses"].get("CUBIN") == 1
    return {**built, "store": root / "store"}


def build_args(store: Path) -> tuple[str, ...]:
    return "build", str(RECIPE), "--arch", "86", "--no-install", "--compile-cache", str(store)


def device_steps_found(built: dict[str, Any]) -> None:
    hits, misses = built["sccache"]["hits"], built["sccache"]["misses"]
    assert (hits.get("CUDA (Device code)"), hits.get("PTX"), hits.get("CUBIN")) == (1, 1, 1), built["sccache"]
    assert not {"CUDA (Device code)", "PTX", "CUBIN"} & set(misses), built["sccache"]


def test_a_cell_whose_torch_lies_elsewhere_finds_every_device_step(first: dict[str, Any], tmp_path: Path) -> None:
    python, site = torch_elsewhere(tmp_path / "elsewhere")
    second = builder_json(*build_args(first["store"]), "--cache", str(tmp_path / "second"), "--python", str(python))
    assert second["cache_key"] == first["cache_key"]
    assert f"{site}/torch/include" in Path(second["log"]).read_text()  # its compiles saw torch there
    device_steps_found(second)


def test_another_key_of_the_same_sources_finds_every_device_step(first: dict[str, Any], tmp_path: Path) -> None:
    """A key of its own (LDFLAGS is in the key, and reaches only the link), so a build folder of its
    own before (key.source_folder): nvcc's source paths differed, and every device step missed."""
    second = builder_json(*build_args(first["store"]), "--cache", str(tmp_path / "second"),
                          env={"LDFLAGS": "-Wl,-O1"})
    assert second["cache_key"] != first["cache_key"]
    device_steps_found(second)
