"""Two wheels of one cache key compared file by file (`builder build --check`).

Each member is compared by content; a shared object that differs is compared section by section
(pyelftools, which auditwheel brings): which ELF sections differ, by how many bytes, and their
sizes. When every member is equal but the files are not, the zip's own metadata (member order,
times, modes) is what differs.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from builder.files import sha256_of
from builder.wheelfile import open_wheel

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class MemberDifference:
    """One member that is not the same in both wheels."""

    name: str
    what: str
    """"only in the first", "only in the second", or "content"."""
    sizes: tuple[int, int] = (0, 0)
    sections: tuple[str, ...] = ()
    """For a shared object: each differing ELF section, e.g. ".nv_fatbin: 198 of 4712384 bytes differ"."""

    def describe(self) -> str:
        if self.what != "content":
            return f"{self.name}: {self.what}"
        where = f"; sections: {'; '.join(self.sections)}" if self.sections else ""
        return f"{self.name}: content differs ({self.sizes[0]} vs {self.sizes[1]} bytes){where}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "what": self.what, "sizes": list(self.sizes), "sections": list(self.sections)}


@dataclass(frozen=True)
class Comparison:
    first: Path
    second: Path
    identical: bool
    """The two files are byte for byte the same."""
    members: tuple[MemberDifference, ...] = ()
    archive: tuple[str, ...] = field(default_factory=tuple)
    """Differences of the zip itself (order, times, modes) when every member's content is equal."""

    def to_json(self) -> dict[str, Any]:
        return {"first": str(self.first), "second": str(self.second), "identical": self.identical,
                "sha256": [sha256_of(self.first), sha256_of(self.second)],
                "members": [m.to_json() for m in self.members], "archive": list(self.archive)}


def _digest(archive: zipfile.ZipFile, name: str) -> str:
    digest = hashlib.sha256()
    with archive.open(name) as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def elf_sections(first: bytes, second: bytes) -> tuple[str, ...]:
    """The sections of two ELF files that differ, and how; () when either is no readable ELF."""
    try:
        a, b = ELFFile(BytesIO(first)), ELFFile(BytesIO(second))
        left = {s.name: s.data() for s in a.iter_sections() if s.name}
        right = {s.name: s.data() for s in b.iter_sections() if s.name}
    except ELFError:
        return ()
    out = []
    for name in sorted(left.keys() | right.keys(), key=lambda n: (n not in left, n)):
        if name not in right or name not in left:
            out.append(f"{name}: only in the {'first' if name in left else 'second'}")
        elif left[name] != right[name]:
            x, y = left[name], right[name]
            changed = sum(p != q for p, q in zip(x, y, strict=False)) + abs(len(x) - len(y))
            out.append(f"{name}: {changed} of {max(len(x), len(y))} bytes differ")
    if not out and first[:64] != second[:64]:
        out.append("ELF header differs")
    return tuple(out)


def compare_wheels(first: Path, second: Path) -> Comparison:
    """Every difference between two wheels, member by member."""
    if sha256_of(first) == sha256_of(second):
        return Comparison(first, second, identical=True)
    with open_wheel(first) as a, open_wheel(second) as b:
        names_a, names_b = set(a.namelist()), set(b.namelist())
        found = [MemberDifference(n, "only in the first") for n in sorted(names_a - names_b)]
        found += [MemberDifference(n, "only in the second") for n in sorted(names_b - names_a)]
        for name in sorted(names_a & names_b):
            if name.endswith("/") or _digest(a, name) == _digest(b, name):
                continue
            sizes = (a.getinfo(name).file_size, b.getinfo(name).file_size)
            sections: tuple[str, ...] = ()
            with a.open(name) as head_a, b.open(name) as head_b:
                if head_a.read(4) == ELF_MAGIC and head_b.read(4) == ELF_MAGIC:
                    sections = elf_sections(a.read(name), b.read(name))
            found.append(MemberDifference(name, "content", sizes, sections))
        archive = () if found else _archive_differences(a, b)
    return Comparison(first, second, identical=False, members=tuple(found), archive=archive)


def _archive_differences(a: zipfile.ZipFile, b: zipfile.ZipFile) -> tuple[str, ...]:
    out = []
    if a.namelist() != b.namelist():
        out.append("member order")
    for info in a.infolist():
        other = b.getinfo(info.filename)
        if info.date_time != other.date_time:
            out.append(f"{info.filename}: time {info.date_time} vs {other.date_time}")
        if info.external_attr != other.external_attr:
            out.append(f"{info.filename}: mode {info.external_attr >> 16:o} vs {other.external_attr >> 16:o}")
        if info.compress_type != other.compress_type or info.compress_size != other.compress_size:
            out.append(f"{info.filename}: compressed differently")
    return tuple(out) or ("zip headers",)
