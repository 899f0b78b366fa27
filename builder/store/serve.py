"""`builder cache serve`: a cache as a package index over HTTP, for every pip and uv in use.

    /simple/[<project>/]                                    every build
    /env/<python>/torch<v>/cu<c>/cxx11abi<A>/sm<gpu>/simple/[<project>/]
                                                            the builds that load in that environment
                                                            (builder/store/environments.py)
    /entries/<key>/<wheel>[.metadata] /entries/<key>/entry.json /index.json
                                                            the stored files: pip's downloads, PEP 658
                                                            metadata, and a read-only --cache-url

Index pages are negotiated by the Accept header (PEP 691): PEP 691 JSON to a client that weights
it highest (pip >= 22.2, uv), `application/vnd.pypi.simple.v1+html` to one that asks for that, and
PEP 503's `text/html` to one that asks for text/html or for nothing specific (no Accept, */*):
pip <= 22.1 refuses every other Content-Type. Files answer HEAD and single Range requests (bytes=a-b,
a-, -n: 206 with Content-Range; 416 for one that starts past the end; several ranges or a malformed
header get the whole file, as RFC 9110 allows). Pages are made from the entries at each request,
so what is built while the server runs shows up at once. Nothing outside entries/ and index.json
is served.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from builder.store import index
from builder.store.cache import Cache
from builder.store.environments import Environment

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_PAGE_TYPES = (index.JSON_TYPE, index.HTML_TYPE, index.LEGACY_HTML_TYPE)  # preferred first among equals
_FILE_TYPES = {".json": "application/json", index.METADATA_SUFFIX: "text/plain; charset=utf-8"}
_CHUNK = 1 << 20
_RANGE = re.compile(r"^bytes=(?:(?P<first>\d+)-(?P<last>\d*)|-(?P<suffix>\d+))$")


def page_type(accept: str) -> str:
    """The index page type for an Accept header: the one of PEP 691's three the client weights
    highest (q=), JSON first among equals; text/html when it names none of them."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media.lower()] = max(weight, weights.get(media.lower(), 0.0))
    best = max(_PAGE_TYPES, key=lambda t: (weights.get(t, 0.0), -_PAGE_TYPES.index(t)))
    return best if weights.get(best, 0.0) > 0 else index.LEGACY_HTML_TYPE


class RangeNotSatisfiable(Exception):
    """A Range that starts at or past the end of the file (HTTP 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte positions a single-range `Range` header asks for, clamped to the file;
    None for the whole file (no header, several ranges, or a malformed one)."""
    match = _RANGE.match((header or "").strip())
    if match is None:
        return None
    if match["suffix"] is not None:
        length = int(match["suffix"])
        if length == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(size - length, 0), size - 1
    first = int(match["first"])
    last = int(match["last"]) if match["last"] else size - 1
    if match["last"] and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


def make_server(cache: Cache, host: str, port: int,
                log: Callable[[str], None] | None = None) -> ThreadingHTTPServer:
    """A server over `cache`, bound but not yet serving (port 0 picks a free port). `log`, when
    given, receives one line per request ("GET /simple/ 200")."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "builder-cache"

        def do_GET(self) -> None:
            self.respond(send_body=True)

        def do_HEAD(self) -> None:
            self.respond(send_body=False)

        def respond(self, *, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["env"] and len(parts) >= 7 and parts[6] == "simple":
                env = Environment.from_path(parts[1:6])
                if env is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.index_page(env, parts[:7], parts[7:], path, send_body)
            elif parts[:1] == ["simple"]:
                self.index_page(None, parts[:1], parts[1:], path, send_body)
            elif parts == ["index.json"]:
                self.file(cache.root / "index.json", send_body)
            elif len(parts) == 3 and parts[0] == "entries" and all(_SAFE_PART.match(p) for p in parts[1:]):
                self.file(cache.root.joinpath(*parts), send_body)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def index_page(self, env: Environment | None, root: list[str], rest: list[str], path: str,
                       send_body: bool) -> None:
            if len(rest) > 1:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            if not path.endswith("/"):
                self.redirect(path + "/")
                return
            project = rest[0] if rest else None
            if project is not None and canonicalize_name(project) != project:
                self.redirect(f"/{'/'.join(root)}/{canonicalize_name(project)}/")
                return
            kind = page_type(self.headers.get("Accept", ""))
            as_json = kind == index.JSON_TYPE
            projects = index.listing((e.meta for e in cache.entries()), env)
            if project is None:
                body = index.root_json(projects) if as_json else index.root_html(projects)
            elif project in projects:
                files = projects[project]
                body = index.project_json(project, files) if as_json else index.project_html(files)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            data = body.encode()
            self.send_response(HTTPStatus.OK)
            self.send_headers(kind, len(data), Vary="Accept")
            if send_body:
                self.wfile.write(data)

        def file(self, path: Path, send_body: bool) -> None:
            if not path.is_file():
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            size = path.stat().st_size
            kind = _FILE_TYPES.get(path.suffix, "application/octet-stream")
            try:
                wanted = byte_range(self.headers.get("Range"), size)
            except RangeNotSatisfiable:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_headers(kind, 0, **{"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
                return
            first, last = wanted if wanted is not None else (0, size - 1)
            if wanted is None:
                self.send_response(HTTPStatus.OK)
                self.send_headers(kind, size, **{"Accept-Ranges": "bytes"})
            else:
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_headers(kind, last - first + 1, **{"Accept-Ranges": "bytes",
                                                             "Content-Range": f"bytes {first}-{last}/{size}"})
            if send_body:
                with path.open("rb") as handle:
                    handle.seek(first)
                    left = last - first + 1
                    while left > 0 and (chunk := handle.read(min(left, _CHUNK))):
                        self.wfile.write(chunk)
                        left -= len(chunk)

        def send_headers(self, content_type: str, length: int, **extra: str) -> None:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()

        def redirect(self, location: str) -> None:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if log is not None:
                log(f"{self.command} {self.path} {int(code) if isinstance(code, HTTPStatus) else code}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)

