"""Arch spellings are normalised once; bad ones are one clear UsageError."""

from __future__ import annotations

import pytest

from builder.errors import UsageError
from builder.planning.archs import Arch, parse_arch, parse_archs, torch_arch_list


@pytest.mark.parametrize("text", ["86", "8.6", "sm_86", "sm86", "SM_86", "compute_86", " 86 "])
def test_spellings_of_one_arch(text: str) -> None:
    assert parse_arch(text) == Arch(86)


def test_ptx_and_suffixes() -> None:
    assert parse_arch("8.6+PTX") == Arch(86, ptx=True)
    assert parse_arch("90a") == Arch(90, "a")
    assert parse_arch("sm_90a").sm == "sm_90a"
    assert parse_arch("9.0a").capability == "9.0a"
    assert parse_arch("100").capability == "10.0"
    assert parse_arch("120f").name == "120f"


def test_lists_are_joined_sorted_and_deduplicated() -> None:
    archs = parse_archs(["90,8.0", "sm_86;80", "86+PTX"])
    assert [str(a) for a in archs] == ["80", "86+PTX", "90"]
    assert torch_arch_list(archs) == "8.0;8.6+PTX;9.0"


def test_gencode_flags() -> None:
    assert parse_arch("86+PTX").gencode() == [
        "-gencode=arch=compute_86,code=sm_86", "-gencode=arch=compute_86,code=compute_86"]


@pytest.mark.parametrize("text", ["ampere", "8", "8.6.1", "sm_", "86+", "86x", "-86"])
def test_malformed(text: str) -> None:
    with pytest.raises(UsageError, match="malformed arch"):
        parse_arch(text)


def test_empty_list() -> None:
    with pytest.raises(UsageError):
        parse_archs([" , ;"])
