"""Give a built wheel its final identity: a local version naming the target, pinned requirements.

`retag` rewrites a wheel's version (``1.0`` -> ``1.0+cu130torch2.14cxx11abiTRUE.sm86``), its
Requires-Dist lines and its RECORD, adds ``builder.json`` with the build's provenance, and
writes the result atomically. Every other byte of METADATA and every other file is kept.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import email.message
import email.parser
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.archs import parse_arch
from builder.errors import BuildError, UsageError

PROVENANCE = "builder.json"
_LOCAL = re.compile(r"^[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*$")
_CHUNK = 1 << 20  # bytes read at a time: members can be GiB-sized .so files
_REWRITTEN = ("RECORD", "RECORD.jws", "RECORD.p7s")  # rewritten, or dropped: no longer valid
Row = tuple[str, str, str]  # RECORD: path, hash, size


@dataclass(frozen=True)
class RequirementRules:
    """How Requires-Dist is rewritten: names to drop, and names pinned to one exact version."""

    drop: tuple[str, ...] = ()
    """Projects whose Requires-Dist lines are removed, whatever their specifier or markers."""
    pin: dict[str, str] = field(default_factory=dict)
    """Project -> version: its lines get ``==version`` (extras, markers kept), or one is added."""

    def __post_init__(self) -> None:
        both = {canonicalize_name(n) for n in self.drop} & {canonicalize_name(n) for n in self.pin}
        if both:
            raise UsageError(f"requirement(s) both dropped and pinned: {', '.join(sorted(both))}")
        for name, version in self.pin.items():
            _version(version, what=f"pin for {name}")


def _version(text: str, *, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise UsageError(f"{what}: {text!r} is not a PEP 440 version") from None


def local_version_label(
    *, cuda: str, torch: str, cxx11_abi: bool, archs: Sequence[str], variants: Sequence[str] = ()
) -> str:
    """flash-attn's local label plus the archs and variants: ``cu130torch2.14cxx11abiTRUE.sm86[.hdim64]``."""
    cu = (*_version(cuda, what="CUDA version").release, 0)[:2]
    th = (*_version(torch, what="torch version").release, 0)[:2]
    parts = [f"cu{cu[0]}{cu[1]}torch{th[0]}.{th[1]}cxx11abi{'TRUE' if cxx11_abi else 'FALSE'}"]
    arch_list = [parse_arch(a) for a in archs]
    parts += dict.fromkeys(f"sm{a.name}{'ptx' if a.ptx else ''}" for a in arch_list)  # keep order
    for variant in variants:
        if not re.fullmatch(r"[a-z0-9]+", variant):
            raise UsageError(f"variant {variant!r} must be lowercase letters and digits only")
        parts.append(variant)
    return ".".join(parts)


def _dist_info(zf: zipfile.ZipFile, wheel: Path) -> str:
    """The wheel's one top-level ``*.dist-info`` directory (no trailing slash)."""
    found = {n.split("/")[0] for n in zf.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n)}
    if len(found) != 1:
        raise BuildError(f"{wheel.name}: expected one .dist-info/METADATA, found {len(found)}")
    return found.pop()


def _read(wheel: Path, member: str) -> bytes | None:
    """Bytes of ``<dist-info>/<member>``, or None when the wheel has no such file."""
    with zipfile.ZipFile(wheel) as zf:
        path = f"{_dist_info(zf, wheel)}/{member}"
        return zf.read(path) if path in zf.namelist() else None


def read_metadata(wheel: Path) -> email.message.Message:
    """The parsed METADATA of `wheel`."""
    return email.parser.BytesParser().parsebytes(_read(wheel, "METADATA") or b"")


def read_provenance(wheel: Path) -> dict[str, object]:
    """The provenance `retag` stored in `wheel`, or ``{}`` when it has none."""
    data = _read(wheel, PROVENANCE)
    value = json.loads(data) if data else {}
    if not isinstance(value, dict):
        raise BuildError(f"{wheel.name}: {PROVENANCE} does not hold a JSON object")
    return value


def _stream(src: IO[bytes], dst: IO[bytes] | None = None) -> tuple[str, str]:
    """RECORD's hash and size of `src`, copying it into `dst` on the way when given."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode(), str(size)


def check_record(wheel: Path) -> None:
    """Raise BuildError unless RECORD lists every file with its true sha256 and size."""
    with zipfile.ZipFile(wheel) as zf:
        record = f"{_dist_info(zf, wheel)}/RECORD"
        if record not in zf.namelist():
            raise BuildError(f"{wheel.name}: no {record}")
        rows = {r[0]: r[1:3] for r in csv.reader(io.StringIO(zf.read(record).decode())) if r}
        unlisted = {record, f"{record}.jws", f"{record}.p7s"}
        files = {n for n in zf.namelist() if not n.endswith("/")} - unlisted
        if odd := sorted(files ^ (set(rows) - unlisted)):
            raise BuildError(f"{wheel.name}: RECORD and archive disagree on {', '.join(odd)}")
        for name in sorted(files):
            with zf.open(name) as src:
                if rows[name] != list(_stream(src)):
                    raise BuildError(f"{wheel.name}: RECORD hash or size wrong for {name}")


def _rewrite_requirement(line: str, eol: str, rules: RequirementRules, seen: set[str]) -> str:
    """One Requires-Dist line as `rules` want it: kept, pinned, or "" when dropped."""
    text = line.split(":", 1)[1].strip()
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise BuildError(f"METADATA has an unreadable Requires-Dist {text!r}: {exc}") from None
    seen.add(name := canonicalize_name(req.name))
    if name in {canonicalize_name(n) for n in rules.drop}:
        return ""
    pins = {canonicalize_name(n): v for n, v in rules.pin.items()}
    if name not in pins:
        return line
    req.specifier = SpecifierSet(f"=={pins[name]}")
    return f"Requires-Dist: {req}{eol}"


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
    added = [
        f"Requires-Dist: {n}=={v}{eol}" for n, v in rules.pin.items() if canonicalize_name(n) not in seen
    ]
    if added and head and not head.endswith("\n"):
        head += eol
    return (head + "".join(added) + text[cut:]).encode("utf-8")


def _put(zout: zipfile.ZipFile, name: str, src: IO[bytes], like: zipfile.ZipInfo, size: int) -> Row:
    """Stream `src` (`size` bytes) into `zout` as `name`, with `like`'s time and mode; its row."""
    info = zipfile.ZipInfo(name, like.date_time)
    info.external_attr, info.compress_type = like.external_attr, zipfile.ZIP_DEFLATED
    info.file_size = size  # lets zipfile pick zip64 for members over 2 GiB
    with zout.open(info, "w") as dst:
        return (name, *_stream(src, dst))


def _rebuild(wheel: Path, dst: IO[bytes], stem: str, files: Mapping[str, bytes]) -> None:
    """Copy `wheel` into `dst`: dist-info and .data renamed to `stem`, `files` put in dist-info.

    Members keep their order, time and mode; dist-info comes last and a new RECORD closes it.
    """
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(dst, "w") as zout:
        old, new = _dist_info(zin, wheel), f"{stem}.dist-info"
        renames = {f"{old}/": f"{new}/", f"{old.removesuffix('.dist-info')}.data/": f"{stem}.data/"}
        skip = {f"{old}/{n}" for n in (*files, *_REWRITTEN)}
        members = [i for i in zin.infolist() if not i.is_dir() and i.filename not in skip]
        rows = []
        for info in sorted(members, key=lambda i: i.filename.startswith(old)):  # dist-info last
            top, sep, rest = info.filename.partition("/")
            with zin.open(info) as src:
                target = renames.get(top + sep, top + sep) + rest
                rows.append(_put(zout, target, src, info, info.file_size))
        like = zin.getinfo(f"{old}/METADATA")
        for path, data in files.items():
            rows.append(_put(zout, f"{new}/{path}", io.BytesIO(data), like, len(data)))
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([*rows, (f"{new}/RECORD", "", "")])
        record = text.getvalue().encode()
        _put(zout, f"{new}/RECORD", io.BytesIO(record), like, len(record))


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[IO[bytes]]:
    """A file in `target`'s folder that replaces `target` once written whole; gone on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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

    The file name keeps the input's tags, except that a wheel tagged `any` that carries shared
    libraries (a setup.py that only copies prebuilt .so files, like bitsandbytes 0.41's) becomes
    ``py3-none-<platform>`` when `platform` is given. Signatures (RECORD.jws, RECORD.p7s) are
    dropped: RECORD changes, so they no longer hold.
    """
    if not _LOCAL.match(local):
        raise UsageError(f"local version label {local!r} must be dot-separated letters and digits")
    name, version = _new_identity(wheel, local)
    tags = wheel.name.removesuffix(".whl").split("-")[2:]  # [build,] python, abi, platform
    files: dict[str, bytes] = {}
    if platform and tags[-1] == "any" and _has_libraries(wheel):
        tags = [*tags[:-3], "py3", "none", platform]
        files["WHEEL"] = _binary_wheel_file(_read(wheel, "WHEEL") or b"", "-".join(tags[-3:]))
    target = out_dir / ("-".join([name, version, *tags]) + ".whl")
    if target.resolve() == wheel.resolve():
        raise UsageError(f"retagging {wheel.name} into {out_dir} would overwrite it")
    prov = json.dumps(dict(provenance), indent=2, sort_keys=True, default=str) + "\n"
    metadata = _rewrite_metadata(_read(wheel, "METADATA") or b"", version, rules)
    with _atomic(target) as fh:
        _rebuild(wheel, fh, f"{name}-{version}", {**files, "METADATA": metadata, PROVENANCE: prov.encode()})
    return target


def _has_libraries(wheel: Path) -> bool:
    with zipfile.ZipFile(wheel) as archive:
        return any(n.endswith(".so") or ".so." in n for n in archive.namelist())


def _binary_wheel_file(data: bytes, tag: str) -> bytes:
    """The WHEEL file of a platform wheel: not purelib, one Tag line."""
    lines = [line for line in data.decode().splitlines()
             if line and not line.startswith(("Tag:", "Root-Is-Purelib:"))]
    return ("\n".join([*lines, "Root-Is-Purelib: false", f"Tag: {tag}"]) + "\n").encode()
