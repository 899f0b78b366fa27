"""What builder chooses where the user left a choice open, and says so: the toolkit a CUDA major
stands for, the newest recipe version that fits the target, the jobs under the user's MAX_JOBS;
and what it names when it cannot: the toolchain command and the torch that pairs with a CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import RecipeError, RequirementError, ToolchainError, UsageError
from builder.planning.plan import choose_toolkit, fitting_version
from builder.planning.recipe import RecipeBook
from builder.planning.toolchain import Toolkit, parse_cuda, select_toolkit
from tests.conftest import TORCHEXT, builder_json, needs_gxx_11, run_builder, write_recipe
from tests.test_bad_input import ARCHS_11_8, assert_refused, fake_toolkit


def toolkit(version: str) -> Toolkit:
    root = Path(f"/opt/cuda-{version}")
    return Toolkit(root=root, nvcc=root / "bin" / "nvcc", version=version, archs=("80", "86", "90"))


@pytest.mark.parametrize(("text", "normal"), [("13", "13"), ("12.8", "12.8"), (" 12.8 ", "12.8"),
                                              ("13.0.88", "13.0"), ("11.08", "11.8")])
def test_cuda_values(text: str, normal: str) -> None:
    assert parse_cuda(text) == normal


@pytest.mark.parametrize("text", ["", " ", "abc", "13.x", "cu130", "12.8-1", "1.2.3.4", "130"])
def test_malformed_cuda_values(text: str) -> None:
    with pytest.raises(UsageError, match="malformed CUDA version"):
        parse_cuda(text)


def test_a_cuda_major_means_its_newest_toolkit_found() -> None:
    found = [toolkit("12.4.131"), toolkit("13.0.88"), toolkit("12.8.93"), toolkit("11.8.89")]
    assert select_toolkit("12", found).version == "12.8.93"
    assert select_toolkit("12.4", found).version == "12.4.131"
    with pytest.raises(ToolchainError, match=r"no CUDA 10\.x toolkit found"):
        select_toolkit("10", found)


def test_a_missing_toolkit_names_the_command_and_the_torch_to_pair() -> None:
    with pytest.raises(ToolchainError) as caught:
        choose_toolkit("11.8", "13.0", [toolkit("13.0.88")], torch="2.14.1+cu130")
    assert caught.value.message == "no CUDA 11.8 toolkit found (found: 13.0 at /opt/cuda-13.0.88)"
    assert caught.value.hint == (
        "`builder toolchain install 11.8` installs it into the cache (or add --provision to this command); "
        "and this environment's torch 2.14.1+cu130 cannot build with CUDA 11.8; use --torch 2.0.1 "
        "(or another cu11x torch: 2.0-2.7 from PyTorch's cu118 index)")
    with pytest.raises(ToolchainError) as mismatch:
        choose_toolkit("11.8", "13.0", [toolkit("13.0.88"), toolkit("11.8.89")], torch="2.14.1+cu130")
    assert "the CUDA majors must match" in mismatch.value.message
    assert mismatch.value.hint == ("use --cuda 13.0, or --torch 2.0.1 (or another cu11x torch: 2.0-2.7 from "
                                   "PyTorch's cu118 index)")
    with pytest.raises(ToolchainError) as unprovisionable:
        choose_toolkit("12.4", "12.8", [toolkit("13.0.88")], torch="2.8.0")
    assert "install CUDA 12.4 under /usr/local/cuda-12.4" in str(unprovisionable.value.hint)
    assert "cannot build" not in str(unprovisionable.value.hint)  # torch's CUDA 12.8 pairs with 12.4


def test_the_newest_version_that_fits_is_taken_and_the_skipped_ones_said() -> None:
    recipe = RecipeBook().load("flash-attn")
    target = {"cuda": "11.8.89", "python": "3.11"}
    assert fitting_version(recipe, {**target, "torch": "2.14.1"}) == ("2.8.3.post2", ())
    version, notes = fitting_version(recipe, {**target, "torch": "2.0.1"})
    assert version == "2.6.3"
    assert notes == ("version 2.6.3: flash-attn 2.8.3.post2 needs torch >=2.2, this build has torch 2.0.1; "
                     "flash-attn 2.8.3 needs torch >=2.2, this build has torch 2.0.1 (--version chooses another)",)
    with pytest.raises(RequirementError, match=r"no version of flash-attn fits this target: .*needs cuda >=11\.7"):
        fitting_version(recipe, {**target, "torch": "2.0.1", "cuda": "11.6.0"})


@needs_gxx_11
def test_the_readme_command_takes_the_version_that_fits(tmp_path: Path) -> None:
    """`builder plan flash-attn --cuda 11.8 --arch 86 --torch 2.0.1` (the README's example) takes
    2.6.3 and says why; an explicit --version 2.8.3 stays strict."""
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    args = ("plan", "flash-attn", "--cuda", "11.8", "--arch", "86", "--torch", "2.0.1", "--cache", str(tmp_path))
    env = {"CUDA_HOME": str(cuda)}
    plan = builder_json(*args, env=env)
    assert plan["version"] == "2.6.3" and plan["toolkit"]["root"] == str(cuda)
    assert plan["notes"] == ["version 2.6.3: flash-attn 2.8.3.post2 needs torch >=2.2, this build has torch "
                             "2.0.1; flash-attn 2.8.3 needs torch >=2.2, this build has torch 2.0.1 (--version "
                             "chooses another)"]
    shown = run_builder(*args, env=env)
    assert "note            version 2.6.3: flash-attn 2.8.3.post2 needs torch >=2.2" in shown.stdout
    strict = run_builder(*args, "--version", "2.8.3", env=env)
    assert_refused(strict, 5, "flash-attn 2.8.3 needs torch >=2.2, this build has torch 2.0.1")


def test_cuda_major_plans_the_newest_toolkit_and_says_which(tmp_path: Path) -> None:
    plan = builder_json("plan", "causal-conv1d", "--cuda", "13", "--arch", "86", "--cache", str(tmp_path))
    assert plan["toolkit"]["version"].startswith("13.")
    short = ".".join(plan["toolkit"]["version"].split(".")[:2])
    assert plan["notes"] == [f"--cuda 13: the newest CUDA 13.x found is {short} ({plan['toolkit']['root']})"]


@pytest.mark.parametrize("value", ["", "abc"])
def test_malformed_cuda_is_refused(tmp_path: Path, value: str) -> None:
    result = run_builder("plan", "causal-conv1d", "--cuda", value, "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 2, f"malformed CUDA version {value!r}", "--cuda 13: the newest 13.x found")


def test_max_jobs_caps_the_plan_and_is_named(tmp_path: Path) -> None:
    plan = builder_json("plan", "causal-conv1d", "--arch", "86", "--cache", str(tmp_path), env={"MAX_JOBS": "1"})
    assert plan["jobs"]["jobs"] == 1 and "environment variable MAX_JOBS" in plan["jobs"]["reason"]
    assert plan["env"]["MAX_JOBS"] == "1"
    shown = run_builder("plan", "causal-conv1d", "--arch", "86", "--cache", str(tmp_path), env={"MAX_JOBS": "1"})
    assert '"jobs": 1' in shown.stdout and "MAX_JOBS" in shown.stdout
    flag = builder_json("plan", "causal-conv1d", "--arch", "86", "--jobs", "1", "--cache", str(tmp_path),
                        env={"MAX_JOBS": "7"})
    assert flag["jobs"]["jobs"] == 1 and "--jobs" in flag["jobs"]["reason"]


def test_companions_naming_each_other_are_refused_with_the_cycle(tmp_path: Path) -> None:
    for name, other in (("cyc-a", "cyc-b"), ("cyc-b", "cyc-a")):
        path = write_recipe(tmp_path, name, f'{{ path = "{TORCHEXT}" }}')
        path.write_text(path.read_text().replace('drop = ["torch"]', f'drop = ["torch"]\ncompanions = ["{other}"]'))
    args = ("plan", str(tmp_path / "cyc-a.toml"), "--arch", "86", "--cache", str(tmp_path / "c"))
    result = run_builder(*args, timeout=300)
    assert_refused(result, RecipeError.exit_code, "companions form a cycle: cyc-a -> cyc-b -> cyc-a")
    assert json.loads(run_builder(*args, "--json", timeout=300).stdout)["kind"] == "RecipeError"
