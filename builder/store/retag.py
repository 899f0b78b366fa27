"""Give a built wheel its final identity: a local version naming the target, pinned requirements,
the platform tag its shared objects allow.

`retag` rewrites a wheel's version (``1.0`` -> ``1.0+cu130torch2.14.1cxx11abiTRUE.sm86``), its
Requires-Dist lines, its platform tag (builder/store/platform_tag.py computes it) and its RECORD,
adds ``builder.json`` with the build's provenance, and writes the result atomically. Every other
byte of METADATA and every other file's content is kept; the zip itself is made reproducible:
members in name order (dist-info last), each with the fixed time of builds (SOURCE_DATE_EPOCH)
and mode 644 or 755.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import BuildError, UsageError
from builder.planning.requirements import RequirementRules
from builder.wheelfile import (
    DEFAULT_TIME,
    EXECUTABLE,
    REGULAR,
    UNSIGNED,
    dist_info,
    names,
    open_wheel,
    read_member,
    read_metadata,
    write_wheel,
)

PROVENANCE = "builder.json"
_LOCAL = re.compile(r"^[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*$")


def read_provenance(wheel: Path) -> dict[str, object]:
    """The provenance `retag` stored in `wheel`, or ``{}`` when it has none."""
    data = read_member(wheel, PROVENANCE)
    value = json.loads(data) if data else {}
    if not isinstance(value, dict):
        raise BuildError(f"{wheel.name}: {PROVENANCE} does not hold a JSON object")
    return value


def _rewrite_requirement(line: str, eol: str, rules: RequirementRules, seen: set[str]) -> str:
    """One Requires-Dist line as `rules` want it: kept, pinned, or "" when dropped."""
    text = line.split(":", 1)[1].strip()
    try:
        seen.add(canonicalize_name(Requirement(text).name))
    except InvalidRequirement as exc:
        raise BuildError(f"METADATA has an unreadable Requires-Dist {text!r}: {exc}") from None
    new = rules.rewrite(text)
    if new is None:
        return ""
    return line if new == text else f"Requires-Dist: {new}{eol}"


def _rewrite_metadata(data: bytes, version: str, rules: RequirementRules) -> bytes:
    """METADATA with a new Version and Requires-Dist per `rules`; every other byte as it was.

    Pins for projects not required yet are added as the last headers.
    """
    text = data.decode("utf-8")
    blank = re.search(r"^\r?$", text, re.MULTILINE)  # the headers end at the first empty line
    cut = blank.start() if blank else len(text)
    out: list[str] = []
    seen: set[str] = set()
    kept, eol = True, "\n"
    for line in re.findall(r"[^\n]*\n|[^\n]+", text[:cut]):
        if line[:1] in (" ", "\t"):  # a continuation line stays only if its header did
            out.append(line if kept else "")
            continue
        key, eol = line.split(":", 1)[0].lower(), line[len(line.rstrip("\r\n")) :] or "\n"
        new = f"Version: {version}{eol}" if key == "version" else line
        if key == "requires-dist":
            new = _rewrite_requirement(line, eol, rules, seen)
        out.append(new)
        kept = new == line
    head = "".join(out)
    added = [f"Requires-Dist: {n}=={v}{eol}" for n, v in rules.pin.items() if n not in seen]
    if added and head and not head.endswith("\n"):
        head += eol
    return (head + "".join(added) + text[cut:]).encode("utf-8")


def rebuild_wheel(wheel: Path, target: Path, stem: str, files: Mapping[str, bytes]) -> None:
    """Copy `wheel` to `target`: dist-info and .data renamed to `stem`, `files` put in dist-info.

    Members go in name order with dist-info last, a new RECORD closing it; every member gets the
    fixed time and mode 755 (any execute bit set before) or 644. Members keep their compressed bytes,
    so the result depends on the members' contents and the compressor that wrote them (one build
    backend and zlib: the same bytes).
    """
    with open_wheel(wheel) as source, write_wheel(target, f"{stem}.dist-info") as out:
        old, new = dist_info(source, wheel), out.dist_info
        renames = {f"{old}/": f"{new}/", f"{old.removesuffix('.dist-info')}.data/": f"{stem}.data/"}
        skip = {f"{old}/{n}" for n in (*files, *UNSIGNED)}
        members = [i for i in source.infolist() if not i.is_dir() and i.filename not in skip]
        renamed = {i.filename: _renamed(i.filename, renames) for i in members}
        for info in sorted(members, key=lambda i: (i.filename.startswith(old), renamed[i.filename])):
            out.copy(source, info, renamed[info.filename], date_time=DEFAULT_TIME, attributes=_mode(info))
        for path, data in sorted(files.items()):
            out.add_bytes(f"{new}/{path}", data, date_time=DEFAULT_TIME, attributes=REGULAR)


def _renamed(name: str, renames: Mapping[str, str]) -> str:
    top, sep, rest = name.partition("/")
    return renames.get(top + sep, top + sep) + rest


def _mode(info: zipfile.ZipInfo) -> int:
    return EXECUTABLE if (info.external_attr >> 16) & 0o111 else REGULAR


def _new_identity(wheel: Path, local: str) -> tuple[str, str]:
    """The wheel's escaped name and its version with `local` as the local part."""
    meta = read_metadata(wheel)
    if not meta["Name"] or not meta["Version"]:
        raise BuildError(f"{wheel.name}: METADATA lacks Name or Version")
    try:
        parse_wheel_filename(wheel.name)
        version = f"{Version(meta['Version']).public}+{local}"
    except (InvalidWheelFilename, InvalidVersion) as exc:
        raise BuildError(f"{wheel.name}: {exc}") from None
    return canonicalize_name(meta["Name"]).replace("-", "_"), version


def retag(
    wheel: Path,
    out_dir: Path,
    *,
    local: str,
    rules: RequirementRules,
    provenance: Mapping[str, object],
    platform: str | None = None,
) -> Path:
    """Write `wheel` into `out_dir` as version ``<public>+<local>``; the new wheel's path.

    The file name keeps the input's python and ABI tags; a wheel that carries shared libraries
    gets `platform` (the tag its shared objects allow) as its platform tag when it is given, and
    one tagged `any` (a setup.py that only copies prebuilt .so files, like bitsandbytes 0.41's)
    becomes ``py3-none-<platform>``. The WHEEL file's Tag lines follow. Signatures (RECORD.jws,
    RECORD.p7s) are dropped: RECORD changes, so they no longer hold.
    """
    if not _LOCAL.match(local):
        raise UsageError(f"local version label {local!r} must be dot-separated letters and digits")
    name, version = _new_identity(wheel, local)
    tags = wheel.name.removesuffix(".whl").split("-")[2:]  # [build,] python, abi, platform
    files: dict[str, bytes] = {}
    if platform and tags[-1] != platform and _has_libraries(wheel):
        tags = [*tags[:-3], "py3", "none", platform] if tags[-1] == "any" else [*tags[:-1], platform]
        files["WHEEL"] = _binary_wheel_file(read_member(wheel, "WHEEL") or b"", *tags[-3:])
    target = out_dir / ("-".join([name, version, *tags]) + ".whl")
    if target.resolve() == wheel.resolve():
        raise UsageError(f"retagging {wheel.name} into {out_dir} would overwrite it")
    prov = json.dumps(dict(provenance), indent=2, sort_keys=True, default=str) + "\n"
    metadata = _rewrite_metadata(read_member(wheel, "METADATA") or b"", version, rules)
    rebuild_wheel(wheel, target, f"{name}-{version}", {**files, "METADATA": metadata, PROVENANCE: prov.encode()})
    return target


def _has_libraries(wheel: Path) -> bool:
    return any(n.endswith(".so") or ".so." in n for n in names(wheel))


def _binary_wheel_file(data: bytes, python: str, abi: str, platform: str) -> bytes:
    """The WHEEL file of a platform wheel: not purelib, a Tag line per python and ABI tag."""
    lines = [line for line in data.decode().splitlines()
             if line and not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    tags = [f"Tag: {p}-{a}-{platform}" for p in python.split(".") for a in abi.split(".")]
    return ("\n".join([*lines, "Root-Is-Purelib: false", *tags]) + "\n").encode()
