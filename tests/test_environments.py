"""Unit tests of the per-environment index roots: which build runs on which GPU, which one an
environment's root lists, the URL layout, and the pages' PEP 503 / 691 / 658 / 714 fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from builder.errors import UsageError
from builder.planning.archs import parse_arch
from builder.store import index
from builder.store.environments import Base, Environment, environment, environments_of, fit, select
from builder.store.serve import RangeNotSatisfiable, byte_range, page_type

BASE = Base("cp311", "2.14.1", "cu130", True)


def meta(archs: list[str], *, torch: str = "2.14.1+cu130", cuda: str = "13.0", python: str = "cp311",
         abi: bool = True, version: str = "0.1.0", created: str = "2025-01-01T00:00:00Z",
         variants: dict[str, str] | None = None, project: str = "fixture_ext") -> dict[str, Any]:
    """An entry.json as Cache.store writes it, with the plan fields environments read."""
    label = ".".join(["cu130torch2.14.1cxx11abiTRUE", *(f"sm{a.replace('+PTX', 'ptx')}" for a in archs)])
    wheel = f"{project}-{version}+{label}-cp311-cp311-linux_x86_64.whl"
    return {"key": f"k{len(archs)}{''.join(archs)}{torch}{python}{abi}{version}{created}", "wheel": wheel,
            "sha256": "0" * 64, "size": 10, "created": created,
            "plan": {"target": {"python_tag": python, "torch": torch, "torch_cuda": cuda, "cxx11_abi": abi},
                     "archs": archs, "variants": variants or {}}}


def gpu_fits(arch: str, gpu: int) -> tuple[int, int] | None:
    return fit(parse_arch(arch), gpu)


@pytest.mark.parametrize(("arch", "gpu", "runs"), [
    ("86", 86, True), ("80", 86, True), ("80", 89, True), ("86", 80, False),  # same major, lower minor
    ("86", 90, False), ("90", 100, False), ("90", 120, False),  # no cubin runs on another major
    ("90a", 90, True), ("100a", 103, False),  # arch-specific: that GPU only
    ("100f", 103, True), ("103f", 100, False),  # family: the major, lower-or-equal minor
    ("86+PTX", 90, True), ("86+PTX", 120, True), ("86+PTX", 80, False),  # PTX: JIT for newer
    ("90a+PTX", 100, False),  # arch-specific PTX is not forward compatible
])
def test_which_code_runs_on_which_gpu(arch: str, gpu: int, runs: bool) -> None:
    assert (gpu_fits(arch, gpu) is not None) is runs


def test_exact_cubin_beats_a_lower_one_beats_ptx() -> None:
    assert gpu_fits("89", 89) > gpu_fits("86", 89) > gpu_fits("80", 89) > gpu_fits("89+PTX", 90)  # type: ignore[operator]


def test_a_root_lists_the_best_fitting_build_per_version_and_nothing_else() -> None:
    sm80, sm86, sm90 = meta(["80"]), meta(["86"]), meta(["90"])
    entries = [sm80, sm86, sm90]
    on = {gpu: select(entries, Environment(BASE, gpu)) for gpu in (80, 86, 89, 90, 100, 75)}
    assert on[80] == [sm80] and on[86] == [sm86] and on[89] == [sm86] and on[90] == [sm90]
    assert on[100] == [] and on[75] == []  # sm90 sorts above sm100 as text: never listed there
    ptx = meta(["90+PTX"])
    assert select([sm90, ptx], Environment(BASE, 100)) == [ptx]


def test_other_torch_python_abi_or_cuda_lists_nothing() -> None:
    others = [meta(["86"], torch="2.14.0+cu130"), meta(["86"], torch="2.14.1+cu128", cuda="12.8"),
              meta(["86"], python="cp312"), meta(["86"], abi=False), {"key": "x", "wheel": "a-1-py3-none-any.whl"}]
    assert select(others, Environment(BASE, 86)) == []


def test_each_version_and_variant_choice_keeps_its_own_build() -> None:
    old, new = meta(["86"], version="0.1.0"), meta(["86"], version="0.2.0")
    variant = meta(["86"], variants={"hdims": "64"})
    later = meta(["86"], created="2025-02-01T00:00:00Z")
    assert sorted(m["key"] for m in select([old, new, variant, later], Environment(BASE, 86))) == \
        sorted(m["key"] for m in (later, new, variant))  # the newer of two equal builds wins
    assert select([meta([])], Environment(BASE, 120)) != []  # no GPU code: every GPU


def test_environment_path_round_trips_and_refuses_what_is_no_gpu() -> None:
    env = environment(python_tag="cp311", torch="2.14.1+cu130", torch_cuda="13.0", cxx11_abi=True, gpu="8.6")
    assert env.path == "env/cp311/torch2.14.1/cu130/cxx11abiTRUE/sm86"
    assert Environment.from_path(env.path.split("/")[1:]) == env
    assert Environment.from_path(["cp311", "torch2.14.1", "cu130", "cxx11abiMAYBE", "sm86"]) is None
    with pytest.raises(UsageError, match="not a GPU"):
        environment(python_tag="cp311", torch="2.14.1", torch_cuda="13.0", cxx11_abi=True, gpu="90a")


def test_the_file_tree_has_a_root_per_base_and_gpu_of_its_cuda() -> None:
    envs = environments_of([meta(["86"]), meta(["80"]), meta(["86"], abi=False)])
    assert {e.base for e in envs} == {BASE, Base("cp311", "2.14.1", "cu130", False)}
    assert {e.gpu for e in envs} == {75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121}  # CUDA 13.0's


def test_pages_carry_requires_python_and_core_metadata() -> None:
    entry = {**meta(["86"]), **index.core_metadata_fields(b"Metadata-Version: 2.1\nName: fixture-ext\n"
                                                           b"Version: 0.1.0\nRequires-Python: >=3.9\n\n")}
    pages = index.published_pages([entry])
    root = "env/cp311/torch2.14.1/cu130/cxx11abiTRUE/sm86/simple"
    page = pages[f"{root}/fixture-ext/index.html"]
    assert f'href="{"../" * 8}entries/{entry["key"]}/{entry["wheel"]}#sha256={"0" * 64}"' in page
    assert 'data-requires-python="&gt;=3.9"' in page
    sha = entry["core_metadata_sha256"]
    assert f'data-dist-info-metadata="sha256={sha}"' in page and f'data-core-metadata="sha256={sha}"' in page
    assert entry["wheel"] not in pages[root.replace("sm86", "sm90") + "/fixture-ext/index.html"]  # empty page
    [listed] = json.loads(index.project_json("fixture-ext", index.listing([entry])["fixture-ext"]))["files"]
    assert listed["requires-python"] == ">=3.9" and listed["core-metadata"] == {"sha256": sha}
    assert listed["dist-info-metadata"] == {"sha256": sha} and listed["size"] == 10


@pytest.mark.parametrize(("accept", "kind"), [
    ("", "text/html"), ("*/*", "text/html"), ("text/html", "text/html"),  # pip <= 22.1 sends text/html
    ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
     index.JSON_TYPE),  # pip >= 22.2
    ("application/vnd.pypi.simple.v1+html", index.HTML_TYPE),
    ("text/html, application/vnd.pypi.simple.v1+json;q=0.5", "text/html"),
    ("application/vnd.pypi.simple.v1+json;q=0", "text/html"),
])
def test_content_negotiation(accept: str, kind: str) -> None:
    assert page_type(accept) == kind


@pytest.mark.parametrize(("header", "wanted"), [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
    ("bytes=90-500", (90, 99)), ("bytes=-500", (0, 99)), ("bytes=0-1,5-6", None), ("bytes=9-2", None),
    ("items=0-1", None),
])
def test_byte_ranges(header: str | None, wanted: tuple[int, int] | None) -> None:
    assert byte_range(header, 100) == wanted


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 100)
