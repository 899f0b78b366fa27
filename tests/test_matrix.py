"""Build matrices: expansion, the reasons cells are dropped, bad matrix files, GitHub's split,
and a real local matrix of fixture builds whose rerun is all cache hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import RecipeError, UsageError
from builder.fleet.matrix import (
    GITHUB_MAX_JOBS,
    TABLE_HEADER,
    Cell,
    MatrixSpec,
    cells_table_rows,
    expand,
    filter_cells,
    github_matrices,
)
from builder.planning.recipe import RecipeBook
from tests.conftest import TORCHEXT, FixtureBuild, builder_json, run_builder, write_recipe

BOOK = RecipeBook()

GOOD_AXES = 'recipe = ["flash-attn"]\npython = ["3.12"]\ntorch = ["2.7.1"]\ncuda = ["12.8"]\n'



def spec_3x2x2(**extra: object) -> MatrixSpec:
    """3 archs (in three spellings) x 2 torch x 2 CUDA of flash-attn."""
    return MatrixSpec.from_mapping({"recipe": ["flash-attn"], "python": ["3.12"], "arch": ["80", "sm_90", "10.0"],
                                    "torch": ["2.7.1", "2.8.0"], "cuda": ["12.8", "11.8"], **extra}, "test", BOOK)


def test_a_3x2x2_matrix_expands_to_12_and_drops_with_reasons() -> None:
    cells = expand(spec_3x2x2(), BOOK)
    assert len(cells) == 12
    assert cells[:2] == [Cell("flash-attn", "2.8.3.post2", "3.12", "2.7.1", "12.8", "80"),
                         Cell("flash-attn", "2.8.3.post2", "3.12", "2.7.1", "12.8", "90")]
    assert cells[0].label == "flash-attn 2.8.3.post2 py3.12 torch2.7.1 cu12.8 sm80"
    kept, dropped = filter_cells(cells, BOOK)
    reasons = {(c.torch, c.cuda, c.arch): r for c, r in dropped}
    assert reasons == {
        ("2.7.1", "11.8", "100"): "CUDA 11.8 cannot target sm_100 (its archs end at sm_90)",
        ("2.8.0", "11.8", "80"): "no known torch 2.8.0 build for CUDA 11.8: PyPI's is CUDA 12.8",
        ("2.8.0", "11.8", "90"): "no known torch 2.8.0 build for CUDA 11.8: PyPI's is CUDA 12.8",
        ("2.8.0", "11.8", "100"): "CUDA 11.8 cannot target sm_100 (its archs end at sm_90)",
    }
    # torch 2.7.1 + cu118 stays: PyTorch's cu118 index has 2.0-2.7; 12.8 targets all three archs
    assert [(c.torch, c.cuda, c.arch) for c in kept] == [
        ("2.7.1", "12.8", "80"), ("2.7.1", "12.8", "90"), ("2.7.1", "12.8", "100"),
        ("2.7.1", "11.8", "80"), ("2.7.1", "11.8", "90"),
        ("2.8.0", "12.8", "80"), ("2.8.0", "12.8", "90"), ("2.8.0", "12.8", "100")]


@pytest.mark.parametrize(("cuda", "arch", "reason"), [
    ("13.0", "70", "CUDA 13.0 cannot target sm_70 (its archs start at sm_75)"),
    ("11.8", "90a", "CUDA 11.8 cannot target sm_90a (its archs end at sm_90)"),
    ("12.8", "103", "CUDA 12.8 cannot target sm_103 (not among its archs, sm_50 to sm_120a)"),
    ("14.0", "90", "CUDA 14.0 is not in builder's table of archs per CUDA (builder/compat.py)"),
])
def test_toolkit_reasons(cuda: str, arch: str, reason: str) -> None:
    spec = MatrixSpec.from_mapping({"recipe": ["flash-attn"], "python": ["3.12"], "arch": [arch],
                                    "torch": ["2.9.0"], "cuda": [cuda]}, "test", BOOK)
    dropped = filter_cells(expand(spec, BOOK), BOOK)[1]
    assert dropped == [(Cell("flash-attn", "2.8.3.post2", "3.12", "2.9.0", cuda, arch), reason)]


def test_recipe_requirements_drop_cells() -> None:
    spec = MatrixSpec.from_mapping({"recipe": ["flash-attn"], "version": ["2.8.3", "2.6.3", "9.9"],
                                    "python": ["3.11"], "arch": ["80", "75"], "torch": ["2.0.1"],
                                    "cuda": ["11.8"]}, "test", BOOK)
    kept, dropped = filter_cells(expand(spec, BOOK), BOOK)
    assert kept == [Cell("flash-attn", "2.6.3", "3.11", "2.0.1", "11.8", "80")]
    assert {(c.version, c.arch): r for c, r in dropped} == {
        ("2.8.3", "80"): "flash-attn 2.8.3 needs torch >=2.2, this build has torch 2.0.1",
        ("2.8.3", "75"): "flash-attn has no kernels for sm_75 (it supports 80, 86, 87, 89, 90, 90a, 100, 100a, "
                         "103, 110, 120, 121)",
        ("2.6.3", "75"): "flash-attn has no kernels for sm_75 (it supports 80, 86, 87, 89, 90, 90a, 100, 100a, "
                         "103, 110, 120, 121)",
        ("9.9", "80"): "flash-attn has no version '9.9'; known: 2.8.3.post2, 2.8.3, 2.6.3",
        ("9.9", "75"): "flash-attn has no version '9.9'; known: 2.8.3.post2, 2.8.3, 2.6.3",
    }


def test_recipes_without_gpu_code_or_a_download() -> None:
    spec = MatrixSpec.from_mapping({"recipe": ["autoawq", "autoawq-kernels", "chatglm-cpu-kernels"],
                                    "python": ["3.12"], "arch": ["80", "90"], "torch": ["2.8.0"],
                                    "cuda": ["12.8"]}, "test", BOOK)
    kept, dropped = filter_cells(expand(spec, BOOK), BOOK)
    # autoawq has no GPU code: one cell for both archs, with no arch (its kernels are their own cells)
    assert kept == [Cell("autoawq", "0.2.9", "3.12", "2.8.0", "12.8", ""),
                    Cell("autoawq-kernels", "0.0.9", "3.12", "2.8.0", "12.8", "80"),
                    Cell("autoawq-kernels", "0.0.9", "3.12", "2.8.0", "12.8", "90")]
    assert kept[0].label == "autoawq 0.2.9 py3.12 torch2.8.0 cu12.8"
    assert [(c.recipe, c.arch, r) for c, r in dropped] == [
        ("chatglm-cpu-kernels", "", "chatglm-cpu-kernels 1.0 has no source to download (build it by hand "
                                    "with --source)")]
    assert cells_table_rows(kept, dropped)[0] == ["autoawq", "0.2.9", "3.12", "2.8.0", "12.8", "-", "build"]
    assert cells_table_rows(kept, dropped)[-1] == ["chatglm-cpu-kernels", "1.0", "3.12", "2.8.0", "12.8", "-",
                                                   f"skip: {dropped[0][1]}"]
    assert len(TABLE_HEADER) == len(cells_table_rows(kept, dropped)[0])


def test_values_are_normalised_and_deduplicated() -> None:
    spec = MatrixSpec.from_mapping({"recipe": "flash-attn", "python": ["3.12"], "arch": [80, "sm_80", "9.0a"],
                                    "torch": ["2.8.0"], "cuda": ["12.8", "12.8"]}, "test", BOOK)
    assert spec.arch == ("80", "90a") and spec.cuda == ("12.8",) and spec.recipe == ("flash-attn",)


def test_exclude_and_the_github_split() -> None:
    cells = expand(spec_3x2x2(exclude=[{"cuda": "11.8"}, {"arch": "sm_100", "torch": "2.8.0"}]), BOOK)
    assert len(cells) == 5
    chunks = github_matrices(cells, max_jobs=2)
    assert [len(c["include"]) for c in chunks] == [2, 2, 1]
    assert [entry["arch"] for c in chunks for entry in c["include"]] == ["80", "90", "100", "80", "90"]
    assert chunks[0]["include"][0] == {"recipe": "flash-attn", "version": "2.8.3.post2", "python": "3.12",
                                       "torch": "2.7.1", "cuda": "12.8", "arch": "80",
                                       "label": "flash-attn 2.8.3.post2 py3.12 torch2.7.1 cu12.8 sm80"}
    assert [len(c["include"]) for c in github_matrices(cells)] == [5]
    assert github_matrices([]) == []
    for bad in (0, GITHUB_MAX_JOBS + 1):
        with pytest.raises(UsageError, match="max_jobs must be 1 to 256"):
            github_matrices(cells, max_jobs=bad)


@pytest.mark.parametrize(("text", "message"), [
    ("[matrix\nrecipe = 1", "not valid TOML"),
    ('[matrix]\nrecipes = ["flash-attn"]', "[matrix]: unknown key 'recipes' (did you mean 'recipe'?)"),
    ('[matrx]\nrecipe = ["flash-attn"]', "unknown key 'matrx' (did you mean 'matrix'?)"),
    ("# nothing", "expected one [matrix] table"),
    ('[matrix]\nrecipe = ["flash-attn"]', "[matrix]: python is missing"),
    (f'[matrix]\n{GOOD_AXES}arch = []', "[matrix]: arch is empty; give at least one value"),
    (f'[matrix]\n{GOOD_AXES}arch = ["sm_8x"]', "[matrix]: arch: malformed arch 'sm_8x'"),
    (f'[matrix]\n{GOOD_AXES}arch = [{{ a = 1 }}]', "[matrix]: arch must be a list of strings, not dict"),
    (f'[matrix]\n{GOOD_AXES}arch = ["80"]\npython = [3.10]', "not valid TOML"),  # a key given twice
    ('[matrix]\nrecipe = ["flash-attn"]\npython = [3.10]\ntorch = ["2.7.1"]\ncuda = ["12.8"]\narch = ["80"]',
     "[matrix]: python value 3.1 must be a quoted string"),
    ('[matrix]\nrecipe = ["flash-attn"]\npython = ["3.12"]\ntorch = ["2.7.1"]\ncuda = ["12"]\narch = ["80"]',
     "[matrix]: cuda: '12' is not a version X.Y"),
    ('[matrix]\nrecipe = ["flash-attn"]\npython = ["3.12"]\ntorch = ["latest"]\ncuda = ["12.8"]\narch = ["80"]',
     "[matrix]: torch: 'latest' is not a version"),
    (f'[matrix]\n{GOOD_AXES}arch = ["80"]\nexclude = [{{ cude = "11.8" }}]',
     "[matrix]: exclude[0]: unknown key 'cude' (did you mean 'cuda'?)"),
    (f'[matrix]\n{GOOD_AXES}arch = ["80"]\nexclude = {{ cuda = "11.8" }}',
     "[matrix]: exclude must be a list of tables"),
])
def test_malformed_matrix_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        MatrixSpec.from_toml(path, BOOK)
    assert message in caught.value.message and caught.value.message.startswith(str(path))
    result = run_builder("matrix", "--matrix-file", str(path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_recipe_in_a_matrix_file(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text('[matrix]\nrecipe = ["flash-atn"]\npython = ["3.12"]\ntorch = ["2.7.1"]\ncuda = ["12.8"]\n'
                    'arch = ["80"]\n')
    with pytest.raises(RecipeError) as caught:
        MatrixSpec.from_toml(path, BOOK)
    assert caught.value.message == f"{path}: [matrix]: recipe: unknown recipe 'flash-atn'"
    assert caught.value.hint == "did you mean 'flash-attn'?"
    assert run_builder("matrix", "--matrix-file", str(path)).returncode == RecipeError.exit_code


def test_matrix_cli_github_format_and_json(tmp_path: Path) -> None:
    path = tmp_path / "matrix.toml"
    path.write_text('[matrix]\nrecipe = ["flash-attn"]\npython = ["3.12"]\ntorch = ["2.7.1", "2.8.0"]\n'
                    'cuda = ["12.8", "11.8"]\narch = ["80", "90", "100"]\n')
    shown = builder_json("matrix", "--matrix-file", str(path))
    assert len(shown["cells"]) == 8 and len(shown["dropped"]) == 4
    github = json.loads(run_builder("matrix", "--matrix-file", str(path), "--format", "github", check=True).stdout)
    assert [len(m["include"]) for m in github] == [8]


def test_a_local_matrix_of_fixture_builds_then_a_rerun_of_cache_hits(tmp_path: Path,
                                                                    fixture_build: FixtureBuild) -> None:
    recipe = write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    cache = fixture_build.copy_cache(tmp_path / "cache")  # holds the session's sm_86 build
    args = ["matrix", "build", "--recipe", str(recipe), "--cuda", "13.0", "--arch", "86,80,35", "--cache", str(cache)]
    first = builder_json(*args)
    by_arch = {o["cell"]["arch"]: o for o in first}
    assert by_arch["80"]["status"] == "built"
    assert by_arch["86"]["status"] == "cache hit" and by_arch["86"]["cache_key"] == fixture_build.result["cache_key"]
    assert by_arch["35"]["status"] == "skipped"
    assert by_arch["35"]["detail"] == "CUDA 13.0 cannot target sm_35 (its archs start at sm_75)"
    second = builder_json(*args)
    assert [o["status"] for o in second] == ["cache hit", "cache hit", "skipped"]
    assert {o["cache_key"] for o in second[:2]} == {by_arch["86"]["cache_key"], by_arch["80"]["cache_key"]}


def test_flags_without_cuda_take_each_torch_releases_cuda_as_plan_does() -> None:
    shown = builder_json("matrix", "--recipe", "causal-conv1d", "--arch", "86", "--torch", "2.14.1")
    assert [(cell["torch"], cell["cuda"]) for cell in shown["cells"]] == [("2.14.1", "13.0")]
