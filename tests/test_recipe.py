"""Recipes load into typed data; unknown keys, versions and recipes are refused with a suggestion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import RecipeError
from builder.planning.recipe import RecipeBook, load_recipe
from tests.conftest import builder_json, run_builder


def test_every_shipped_recipe_loads() -> None:
    names = list(RecipeBook().available())
    assert {"flash-attn", "causal-conv1d"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.default_version in recipe.versions
        for spec in recipe.versions.values():
            assert (spec.sha256 and len(spec.sha256) == 64) or spec.local or spec.path


def test_flash_attn_patches_follow_the_version() -> None:
    recipe = load_recipe("flash-attn")
    facts = {"torch": "2.14.1", "cuda": "13.0.88", "python": "3.11"}
    for version in ("2.8.3", "2.8.3.post2"):
        assert [p.file for p in recipe.patches_for({**facts, "version": version})] == [
            "flash-attn/2.8-any-arch.patch", "flash-attn/2.8-cxx-std.patch"]
    assert [p.file for p in recipe.patches_for({**facts, "version": "2.6.3"})] == [
        "flash-attn/2.6-any-arch.patch", "flash-attn/2.6-cxx-std.patch"]


def test_unknown_recipe_suggests_a_name() -> None:
    with pytest.raises(RecipeError, match="unknown recipe 'flash-atn'") as info:
        load_recipe("flash-atn")
    assert info.value.hint == "did you mean 'flash-attn'?"


def test_unknown_version_lists_known_ones() -> None:
    with pytest.raises(RecipeError, match=r"no version '9.9'; known: 2\.8\.3\.post2, 2\.8\.3, 2\.6\.3"):
        load_recipe("flash-attn").source_for("9.9")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


BASE = """name = "r"
backend = "torch-ext"
default_version = "1.0"
[versions."1.0"]
source = { path = "." }
"""


def test_unknown_key_gets_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"unknown key 'job_memory' \(did you mean 'job_memory_gb'\?\)"):
        load_recipe(str(_write(tmp_path, BASE + "[build]\njob_memory = 3\n")))


def test_unknown_template_field(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"unknown template field \{arch\} \(did you mean 'archs'\?\)"):
        load_recipe(str(_write(tmp_path, BASE + '[build]\nenv = { X = "{arch}" }\n')))


def test_bad_condition_and_missing_sha(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="unknown key 'versoin'"):
        load_recipe(str(_write(tmp_path, BASE + '[[patches]]\nfile = "x"\nwhen = { versoin = ">1" }\n')))
    text = BASE.replace('{ path = "." }', '{ url = "https://example.invalid/x.tar.gz" }')
    with pytest.raises(RecipeError, match="needs sha256"):
        load_recipe(str(_write(tmp_path, text)))


def test_bitsandbytes_builds_each_era_with_its_backend_and_patches() -> None:
    recipe = load_recipe("bitsandbytes")
    assert recipe.backend_for("0.49.0") == "cmake" and recipe.backend_for("0.41.0") == "make"
    assert recipe.backend_for("0.50.1") == "cmake"
    assert recipe.native["make"].targets == ("cuda11x", "cuda11x_nomatmul")
    facts = {"torch": "2.14.1", "python": "3.11"}
    assert [p.file for p in recipe.patches_for({**facts, "version": "0.41.0", "cuda": "13.0.88"})] == [
        "bitsandbytes/0.41-cuda13.patch"]
    assert recipe.patches_for({**facts, "version": "0.41.0", "cuda": "12.4.131"}) == ()
    assert recipe.patches_for({**facts, "version": "0.49.0", "cuda": "13.0.88"}) == ()


def test_a_native_backend_needs_its_table_and_outputs(tmp_path: Path) -> None:
    text = BASE.replace('backend = "torch-ext"', 'backend = "make"')
    with pytest.raises(RecipeError, match=r"the make backend needs a \[make\] table"):
        load_recipe(str(_write(tmp_path, text)))
    with pytest.raises(RecipeError, match="outputs must name the libraries"):
        load_recipe(str(_write(tmp_path, text + '[make]\ntargets = ["all"]\n')))
    with pytest.raises(RecipeError, match=r"unknown template field \{cuda_digit\}"):
        load_recipe(str(_write(tmp_path, text + '[make]\noutputs = ["lib{cuda_digit}.so"]\n')))


def test_flash_attn_kernel_subsets_are_variants_of_2_8_3_and_its_post_releases(tmp_path: Path) -> None:
    plan = builder_json("plan", "flash-attn", "--arch", "90", "--variant", "hdims=256,32",
                        "--variant", "backward=off", "--cache", str(tmp_path))
    assert plan["variants"] == {"hdims": "32,256", "backward": "off"}
    assert plan["env"]["FLASH_ATTN_HDIMS"] == "32,256" and plan["env"]["FLASH_ATTN_BACKWARD"] == "0"
    assert plan["patches"][-1] == {"file": "flash-attn/2.8.3-variants.patch", "when": "always",
                                   "variants": "hdims, backward"}
    assert plan["local_version"].endswith(".sm90.backwardoff.hdims32x256")
    refused = run_builder("plan", "flash-attn", "--version", "2.6.3", "--arch", "90", "--variant", "hdims=64",
                          "--cache", str(tmp_path), "--json")
    assert refused.returncode == 2
    assert json.loads(refused.stdout) == {"error": "variant hdims of flash-attn needs version <=2.8.3.post2,>=2.8.3, "
                                                   "not 2.6.3",
                                          "kind": "UsageError", "exit_code": 2}


def test_builder_recipes_never_cuts_a_name_piped_or_in_a_narrow_terminal(tmp_path: Path) -> None:
    long_name = "a-recipe-whose-name-alone-is-longer-than-a-terminal-of-eighty-columns-is-wide"
    (tmp_path / f"{long_name}.toml").write_text(
        f'name = "{long_name}"\nbackend = "torch-ext"\ndefault_version = "0.1.0"\n'
        f'description = "a user recipe"\n[versions."0.1.0"]\nsource = {{ path = "." }}\n')
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"BUILDER_RECIPE_PATH": str(tmp_path)}
    piped = subprocess.run([sys.executable, "-m", "builder", "recipes"], env=env, capture_output=True, text=True,
                           check=True).stdout
    rows = {line.split("│")[1].strip(): line for line in piped.splitlines() if line.count("│") > 2}
    assert long_name in rows and "torch-ext" in rows[long_name]  # whole, and its row on one line
    assert "2.8.3.post2" in rows["flash-attn"] and "chatglm-cpu-kernels" in rows
    narrow = subprocess.run([sys.executable, "-m", "builder", "recipes"], env={**env, "COLUMNS": "80"},
                            capture_output=True, text=True, check=True).stdout
    names = [line.split("│")[1].strip() for line in narrow.splitlines() if line.count("│") > 2]
    assert long_name in names and "chatglm-cpu-kernels" in names and not any("…" in name for name in names)
