"""The METADATA of a wheel on an index without downloading the wheel (torch's are 500-900 MB).

PEP 658 first: the index serves `<wheel url>.metadata` when its project page says so
(`core-metadata` in PEP 691 JSON, `data-core-metadata` in HTML). Else the wheel is read through
HTTP range requests under zipfile, the way pip's network/lazy_wheel.py does: the zip's central
directory sits at its end, so a few blocks from the end and the METADATA member's own bytes are
all that is fetched (3 range requests for torch 2.14.1's 554 MB wheel on PyPI, measured here).
A file:// wheel is read in place.
"""

from __future__ import annotations

import io
import re
import urllib.request
import zipfile
from urllib.parse import urlparse

from builder.errors import SourceError
from builder.index_client import IndexedFile, open_url

BLOCK = 256 * 1024  # bytes asked for at a time: the central directory of torch's wheel is ~1.3 MB
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def wheel_metadata(file: IndexedFile) -> bytes:
    """The METADATA of the wheel `file` names: PEP 658, else range requests, else a local read."""
    if urlparse(file.url).scheme == "file":
        with zipfile.ZipFile(urllib.request.url2pathname(urlparse(file.url).path)) as archive:
            return _member(archive, file)
    if file.metadata:
        with open_url(file.url + ".metadata") as response:
            return response.read()
    try:
        with zipfile.ZipFile(io.BufferedReader(RangeFile(file.url), BLOCK)) as archive:
            return _member(archive, file)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{file.url} is not a readable wheel: {exc}") from exc


def _member(archive: zipfile.ZipFile, file: IndexedFile) -> bytes:
    names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
    if len(names) != 1:
        raise SourceError(f"{file.filename} holds {len(names)} .dist-info/METADATA files, expected one")
    return archive.read(names[0])


class RangeFile(io.RawIOBase):
    """A read-only, seekable view of a remote file, fetched in blocks by HTTP range requests."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.position = 0
        self.segments: list[tuple[int, bytes]] = []
        start, data, self.size = self._fetch(f"bytes=-{BLOCK}")
        self.segments.append((start, data))

    def _fetch(self, ranges: str) -> tuple[int, bytes, int]:
        """(first byte's offset, the bytes, the file's size) of one range request."""
        request = urllib.request.Request(self.url, headers={"Range": ranges, "User-Agent": "builder"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                found = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if response.status != 206 or found is None:
                    raise SourceError(f"{self.url}: the server does not answer range requests "
                                      f"(HTTP {response.status}), and the index offers no PEP 658 metadata for it")
                return int(found[1]), response.read(), int(found[3])
        except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
            raise SourceError(f"cannot fetch {self.url}: {getattr(exc, 'reason', exc)}") from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = max(0, min(len(buffer), self.size - self.position))
        if wanted == 0:
            return 0
        data = self._read(self.position, wanted)
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def _read(self, start: int, length: int) -> bytes:
        for offset, data in self.segments:
            if offset <= start and start + length <= offset + len(data):
                return data[start - offset:start - offset + length]
        first = start - start % BLOCK
        last = min(self.size, max(start + length, first + BLOCK)) - 1
        offset, data, _ = self._fetch(f"bytes={first}-{last}")
        self.segments.append((offset, data))
        return data[start - offset:start - offset + length]
