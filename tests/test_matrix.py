"""Build matrices: expansion, the reasons cells are dropped, bad matrix files, GitHub's split,
and a real local matrix of fixture builds whose rerun is all cache hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import UsageError
from builder.matrix import Cell, MatrixSpec, expand, filter_cells, github_matrices
from tests.conftest import TORCHEXT, builder_json, run_builder, write_recipe


def spec_3x2x2(**extra: object) -> MatrixSpec:
    return MatrixSpec.from_mapping({"recipe": ["flash-attn"], "python": ["3.12"], "arch": ["80", "sm_90", "10.0"],
                                    "torch": ["2.7.1", "2.8.0"], "cuda": ["12.8", "11.8"], **extra}, "test")


def test_a_3x2x2_matrix_expands_to_12_and_drops_with_reasons() -> None:
    cells = expand(spec_3x2x2())
    assert len(cells) == 12 and cells[0] == Cell("flash-attn", "2.8.3", "3.12", "2.7.1", "12.8", "80")
    kept, dropped = filter_cells(cells)
    reasons = {(c.torch, c.cuda, c.arch): r for c, r in dropped}
    assert reasons == {
        ("2.7.1", "11.8", "100"): "CUDA 11.8 cannot target sm_100 (it targets sm_35 to sm_90)",
        ("2.8.0", "11.8", "80"): "no torch 2.8.0 build for CUDA 11 (PyPI's is CUDA 12.8)",
        ("2.8.0", "11.8", "90"): "no torch 2.8.0 build for CUDA 11 (PyPI's is CUDA 12.8)",
        ("2.8.0", "11.8", "100"): "CUDA 11.8 cannot target sm_100 (it targets sm_35 to sm_90)",
    }
    assert len(kept) == 8  # torch 2.7.1 + cu118 stays: PyTorch's cu118 index has it


def test_recipe_requirements_drop_cells() -> None:
    spec = MatrixSpec.from_mapping({"recipe": ["flash-attn"], "python": ["3.11"], "arch": ["80"],
                                    "torch": ["2.0.1", "2.7.1"], "cuda": ["11.8"]}, "test")
    _, dropped = filter_cells(expand(spec))
    [(cell, reason)] = dropped
    assert cell.torch == "2.0.1" and reason == "flash-attn 2.8.3 needs torch >=2.2, this build has torch 2.0.1"


def test_exclude_and_the_github_split() -> None:
    cells = expand(spec_3x2x2(exclude=[{"cuda": "11.8"}, {"arch": "sm_100", "torch": "2.8.0"}]))
    assert len(cells) == 5
    chunks = github_matrices(cells, max_jobs=2)
    assert [len(c["include"]) for c in chunks] == [2, 2, 1]
    assert chunks[0]["include"][0] == {"recipe": "flash-attn", "version": "2.8.3", "python": "3.12",
                                       "torch": "2.7.1", "cuda": "12.8", "arch": "80"}


@pytest.mark.parametrize(("text", "message"), [
    ("[matrix\nrecipe = 1", "not valid TOML"),
    ('[matrix]\nrecipes = ["flash-attn"]', "unknown key 'recipes' (did you mean 'recipe'?)"),
    ('[matrix]\nrecipe = ["flash-attn"]\npython = ["3.12"]\ntorch = []\ncuda = ["12.8"]\narch = ["80"]',
     "torch is empty"),
    ('[matrix]\nrecipe = ["flash-attn"]\npython = ["3.12"]\ntorch = ["2.7.1"]\ncuda = ["12.8"]\narch = ["sm_8x"]',
     "sm_8x"),
    ('[build]\nrecipe = ["flash-attn"]', "expected one [matrix] table"),
])
def test_malformed_matrix_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=None) as caught:
        MatrixSpec.from_toml(path)
    assert message in caught.value.message and str(path) in caught.value.message
    result = run_builder("matrix", "--matrix-file", str(path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_matrix_cli_github_format_and_json(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text('[matrix]\nrecipe = ["flash-attn"]\npython = ["3.12"]\ntorch = ["2.7.1", "2.8.0"]\n'
                    'cuda = ["12.8", "11.8"]\narch = ["80", "90", "100"]\n')
    shown = builder_json("matrix", "--matrix-file", str(path))
    assert len(shown["cells"]) == 8 and len(shown["dropped"]) == 4
    github = json.loads(run_builder("matrix", "--matrix-file", str(path), "--format", "github", check=True).stdout)
    assert [len(m["include"]) for m in github] == [8]


def test_a_local_matrix_of_fixture_builds_then_a_rerun_of_cache_hits(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    args = ["matrix", "build", "--recipe", str(recipe), "--cuda", "13.0", "--arch", "86,80,35",
            "--cache", str(tmp_path / "cache")]
    first = builder_json(*args)
    by_arch = {o["cell"]["arch"]: o for o in first}
    assert by_arch["86"]["status"] == by_arch["80"]["status"] == "built"
    assert by_arch["35"]["status"] == "skipped" and "cannot target sm_35" in by_arch["35"]["detail"]
    second = builder_json(*args)
    assert [o["status"] for o in second] == ["cache hit", "cache hit", "skipped"]
    assert {o["cache_key"] for o in second[:2]} == {by_arch["86"]["cache_key"], by_arch["80"]["cache_key"]}
