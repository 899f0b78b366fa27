"""A client of package indexes (PyPI's simple API and its mirrors): the files of a project, and
its releases read from the files' names.

Asks for PEP 691 JSON and takes PEP 503 HTML when that is what the index serves (many mirrors and
plain static file trees do), the way pip negotiates (pip/_internal/index/collector.py sends the
same Accept header). A file:// index is a folder of <project>/<file>, as pip reads one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any, cast
from urllib.parse import urldefrag, urljoin, urlparse

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from builder.errors import SourceError

TIMEOUT_S = 60.0  # seconds a connect or read may stall before a request fails
PYPI_SIMPLE = "https://pypi.org/simple"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@dataclass(frozen=True)
class IndexedFile:
    """One file a project page lists."""

    filename: str
    url: str
    sha256: str | None = None
    requires_python: str | None = None
    metadata: bool = False
    """The index serves the file's METADATA at `<url>.metadata` (PEP 658, PEP 714)."""
    yanked: bool = False
    """PEP 592: pip installs a yanked file only when pinned to it exactly."""


@contextmanager
def open_url(url: str, *, accept: str = "*/*", timeout: float | None = None) -> Iterator[HTTPResponse]:
    """A GET response; every failure is one SourceError naming the URL."""
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "builder"})
    try:
        with urllib.request.urlopen(request, timeout=timeout or TIMEOUT_S) as response:
            yield cast(HTTPResponse, response)
    except urllib.error.HTTPError as e:
        raise SourceError(f"GET {url} failed: HTTP {e.code} {e.reason}") from e
    except (OSError, HTTPException, ValueError) as e:  # URLError is an OSError
        raise SourceError(f"cannot fetch {url}: {getattr(e, 'reason', e)}") from e


def project_page(index_url: str, project: str) -> str:
    return f"{index_url.rstrip('/')}/{canonicalize_name(project)}/"


def project_files(index_url: str, project: str) -> list[IndexedFile]:
    """Every file the index lists for `project`."""
    page = project_page(index_url, project)
    if urlparse(page).scheme == "file":
        folder = Path(urllib.request.url2pathname(urlparse(page).path))
        if not folder.is_dir():
            raise SourceError(f"the local index has no folder {folder}")
        return [IndexedFile(p.name, p.as_uri()) for p in sorted(folder.iterdir()) if p.is_file()]
    with open_url(page, accept=ACCEPT) as response:
        kind = response.headers.get("Content-Type", "").split(";")[0].strip()
        body = response.read()
    if kind == JSON_TYPE:
        return _from_json(body, page)
    return _from_html(body.decode("utf-8", "replace"), page)


def _from_json(body: bytes, page: str) -> list[IndexedFile]:
    try:
        data: Any = json.loads(body)
    except ValueError as e:
        raise SourceError(f"{page} did not answer with PEP 691 JSON: {e}") from e
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise SourceError(f"{page} is not a PEP 691 project page (no `files` list)")
    found = []
    for entry in files:
        if isinstance(entry, dict) and entry.get("filename") and entry.get("url"):
            hashes = entry.get("hashes")
            sha = hashes.get("sha256") if isinstance(hashes, dict) else None
            metadata = entry.get("core-metadata", entry.get("data-dist-info-metadata"))
            found.append(IndexedFile(str(entry["filename"]), urljoin(page, str(entry["url"])),
                                     str(sha) if sha else None, entry.get("requires-python") or None,
                                     bool(metadata), yanked=entry.get("yanked", False) not in (False, None)))
    return found


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), ""

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._open, self._text.strip()))
            self._open = None


def _from_html(text: str, page: str) -> list[IndexedFile]:
    """PEP 503: an anchor per file, the hash in the URL's fragment (#sha256=...)."""
    parser = _Anchors()
    parser.feed(text)
    found = []
    for attrs, label in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        url, fragment = urldefrag(urljoin(page, href))
        name = label or Path(urlparse(url).path).name
        sha = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else None
        key = next((k for k in ("data-core-metadata", "data-dist-info-metadata") if k in attrs), None)
        found.append(IndexedFile(name, url, sha, attrs.get("data-requires-python") or None,
                                 key is not None and attrs[key] != "false", yanked="data-yanked" in attrs))
    return found


def file_version(filename: str) -> Version | None:
    """The release a wheel or sdist file belongs to, from its name (None for other names)."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def project_releases(index_url: str, project: str) -> dict[Version, list[IndexedFile]]:
    """The project's releases with their files, oldest first; a release whose every file is yanked
    is left out (PEP 592: such a release is gone for everyone who does not pin it)."""
    by_version: dict[Version, list[IndexedFile]] = {}
    for found in project_files(index_url, project):
        version = file_version(found.filename)
        if version is not None:
            by_version.setdefault(version, []).append(found)
    return {v: files for v, files in sorted(by_version.items()) if not all(f.yanked for f in files)}


def sdist_of(files: list[IndexedFile]) -> IndexedFile | None:
    """The release's source distribution (.tar.gz first, then .zip), yanked files left out."""
    sdists = [f for f in files if not f.yanked and f.filename.endswith((".tar.gz", ".zip"))]
    return sorted(sdists, key=lambda f: not f.filename.endswith(".tar.gz"))[0] if sdists else None
