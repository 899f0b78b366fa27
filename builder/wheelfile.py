"""Reading and writing wheel files (PEP 427): the one place that knows their layout.

`WheelWriter` streams members into a new wheel, keeps each one's RECORD row (sha256, size), and
closes the wheel with RECORD; `write_wheel` places the finished file atomically. Readers find the
one `.dist-info` folder and its files, and `check_record` proves RECORD true.
"""

from __future__ import annotations

import base64
import csv
import email.message
import email.parser
import hashlib
import io
import re
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from builder.errors import BuildError
from builder.files import atomic_writer

_CHUNK = 1 << 20  # bytes read at a time: members can be GiB-sized .so files
UNSIGNED = ("RECORD", "RECORD.jws", "RECORD.p7s")  # dist-info files RECORD does not list as hashed
DEFAULT_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build time in the file
DEFAULT_EPOCH = 315532800  # the same instant as seconds since 1970 (UTC): the SOURCE_DATE_EPOCH of builds
EXECUTABLE = 0o755 << 16
REGULAR = 0o644 << 16
# Where a local file header's name and extra-field lengths sit (APPNOTE.TXT 4.3.7: the header is
# 30 bytes, these two 2-byte fields its last).
_LOCAL_NAME_LENGTHS = 26


def dist_info(archive: zipfile.ZipFile, wheel: Path) -> str:
    """The wheel's one top-level ``*.dist-info`` folder (no trailing slash)."""
    found = {n.split("/")[0] for n in archive.namelist() if re.match(r"^[^/]+\.dist-info/METADATA$", n)}
    if len(found) != 1:
        raise BuildError(f"{wheel.name}: expected one .dist-info/METADATA, found {len(found)}")
    return found.pop()


def open_wheel(wheel: Path) -> zipfile.ZipFile:
    """The wheel as a zip; a file that is none is one clear error."""
    try:
        return zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BuildError(f"{wheel} is not a wheel (not a readable zip file: {exc})") from exc


def read_member(wheel: Path, member: str) -> bytes | None:
    """Bytes of ``<dist-info>/<member>``, or None when the wheel has no such file."""
    with open_wheel(wheel) as archive:
        path = f"{dist_info(archive, wheel)}/{member}"
        return archive.read(path) if path in archive.namelist() else None


def read_metadata(wheel: Path) -> email.message.Message:
    """The parsed METADATA of `wheel`."""
    return email.parser.BytesParser().parsebytes(read_member(wheel, "METADATA") or b"")


def names(wheel: Path) -> list[str]:
    with open_wheel(wheel) as archive:
        return archive.namelist()


def record_hash(source: IO[bytes], copy_to: IO[bytes] | None = None) -> tuple[str, str]:
    """RECORD's hash and size of `source`, copying it into `copy_to` on the way when given."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode(), str(size)


def check_record(wheel: Path) -> None:
    """Raise BuildError unless RECORD lists every file with its true sha256 and size."""
    with open_wheel(wheel) as archive:
        record = f"{dist_info(archive, wheel)}/RECORD"
        if record not in archive.namelist():
            raise BuildError(f"{wheel.name}: no {record}")
        rows = {r[0]: r[1:3] for r in csv.reader(io.StringIO(archive.read(record).decode())) if r}
        unlisted = {f"{record.rsplit('/', 1)[0]}/{n}" for n in UNSIGNED}
        files = {n for n in archive.namelist() if not n.endswith("/")} - unlisted
        if odd := sorted(files ^ (set(rows) - unlisted)):
            raise BuildError(f"{wheel.name}: RECORD and archive disagree on {', '.join(odd)}")
        for name in sorted(files):
            with archive.open(name) as src:
                if rows[name] != list(record_hash(src)):
                    raise BuildError(f"{wheel.name}: RECORD hash or size wrong for {name}")


class WheelWriter:
    """Members streamed into a wheel with their RECORD rows; `finish` writes RECORD."""

    def __init__(self, handle: IO[bytes], dist_info_dir: str) -> None:
        self.archive = zipfile.ZipFile(handle, "w")
        self.dist_info = dist_info_dir
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, source: IO[bytes], size: int, *, date_time: tuple[int, ...] = DEFAULT_TIME,
            attributes: int = REGULAR) -> None:
        """`size` bytes of `source` as member `name`."""
        info = zipfile.ZipInfo(name, date_time)  # type: ignore[arg-type]
        info.external_attr, info.compress_type = attributes, zipfile.ZIP_DEFLATED
        info.file_size = size  # lets zipfile pick zip64 for members over 2 GiB
        with self.archive.open(info, "w") as out:
            self.rows.append((name, *record_hash(source, out)))

    def copy(self, source: zipfile.ZipFile, member: zipfile.ZipInfo, name: str, *,
             date_time: tuple[int, ...] = DEFAULT_TIME, attributes: int = REGULAR) -> None:
        """Member `member` of the open wheel `source` as `name`. A deflated member's compressed bytes
        are copied as they are (deflating flash-attn's 400 MB library again took 12 s, inflating it to
        hash takes about 1 s); its contents are read once for RECORD, checked against its CRC."""
        with source.open(member) as src:
            if member.compress_type != zipfile.ZIP_DEFLATED:
                self.add(name, src, member.file_size, date_time=date_time, attributes=attributes)
                return
            row = record_hash(src)
        info = zipfile.ZipInfo(name, date_time)  # type: ignore[arg-type]
        info.external_attr, info.compress_type = attributes, zipfile.ZIP_DEFLATED
        info.CRC, info.compress_size, info.file_size = member.CRC, member.compress_size, member.file_size
        # What ZipFile.writestr does for a member it compressed itself (CPython Lib/zipfile: the local
        # header, the data, then the entry in the central directory that close() writes).
        out, zip64 = self.archive.fp, max(info.file_size, info.compress_size) > zipfile.ZIP64_LIMIT
        assert out is not None and source.filename is not None
        info.header_offset = out.tell()
        out.write(info.FileHeader(zip64))
        with open(source.filename, "rb") as raw:
            raw.seek(member.header_offset + _LOCAL_NAME_LENGTHS)
            name_length, extra_length = struct.unpack("<HH", raw.read(4))
            raw.seek(name_length + extra_length, io.SEEK_CUR)
            left = member.compress_size
            while left > 0 and (chunk := raw.read(min(_CHUNK, left))):
                out.write(chunk)
                left -= len(chunk)
        if left:
            raise BuildError(f"{Path(source.filename).name}: {member.filename} is cut short")
        self.archive.filelist.append(info)
        self.archive.NameToInfo[name] = info
        self.archive.start_dir = out.tell()
        self.rows.append((name, *row))

    def add_bytes(self, name: str, data: bytes, **kwargs: object) -> None:
        self.add(name, io.BytesIO(data), len(data), **kwargs)  # type: ignore[arg-type]

    def finish(self, **kwargs: object) -> None:
        """RECORD (listing every member and itself), then the zip's directory."""
        text = io.StringIO()
        record = f"{self.dist_info}/RECORD"
        csv.writer(text, lineterminator="\n").writerows([*self.rows, (record, "", "")])
        data = text.getvalue().encode()
        info_kwargs = {k: v for k, v in kwargs.items() if k in ("date_time", "attributes")}
        self.add(record, io.BytesIO(data), len(data), **info_kwargs)  # type: ignore[arg-type]
        self.archive.close()


@contextmanager
def write_wheel(target: Path, dist_info_dir: str) -> Iterator[WheelWriter]:
    """A WheelWriter whose wheel replaces `target` only once it is complete."""
    with atomic_writer(target) as handle:
        writer = WheelWriter(handle, dist_info_dir)
        yield writer
        writer.finish()
