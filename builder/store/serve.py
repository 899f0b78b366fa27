"""`builder cache serve`: a cache as a package index over HTTP, for every pip and uv in use.

    /simple/[<project>/]                                    every build
    /env/<python>/torch<v>/cu<c>/cxx11abi<A>/sm<gpu>/simple/[<project>/]
                                                            the builds that load in that environment
                                                            (builder/store/environments.py)
    /variants/torch<v>/cu<c>/cxx11abi<A>/simple/[<project>/[<name>-<version>-variants.json]]
                                                            the variant wheels (PEP 825) built against
                                                            one torch, for uv (builder/store/variants.py)
    /entries/<key>/<wheel>[.metadata] /entries/<key>/entry.json /index.json
                                                            the stored files: pip's and uv's downloads
                                                            (plain and variant wheels), PEP 658
                                                            metadata, and a read-only --cache-url
    /[?env=<python>/torch<v>/cu<c>/cxx11abi<A>/sm<gpu>]     the page for people (builder/store/page.py)

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
import zipfile
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from packaging.utils import canonicalize_name

from builder.errors import BuilderError
from builder.store import index, page
from builder.store.cache import Cache, Entry
from builder.store.environments import Environment
from builder.store.retag import read_provenance
from builder.store.variants import VariantsRoot

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


def make_server(cache: Cache, host: str, port: int, log: Callable[[str], None] | None = None,
                matrix: Sequence[page.MatrixCell] | None = None) -> ThreadingHTTPServer:
    """A server over `cache`, bound but not yet serving (port 0 picks a free port). `log`, when
    given, receives one line per request ("GET /simple/ 200"); `matrix`, the cells the page at /
    shows as built or missing."""
    provenances: dict[tuple[str, str], Mapping[str, Any]] = {}

    def provenance(entry: Entry) -> Mapping[str, Any]:
        """The wheel's builder.json, read once per key and hash ({} for one without)."""
        if (entry.key, entry.sha256) not in provenances:
            try:
                provenances[entry.key, entry.sha256] = read_provenance(entry.wheel)
            except (BuilderError, OSError, ValueError, zipfile.BadZipFile):
                provenances[entry.key, entry.sha256] = {}
        return provenances[entry.key, entry.sha256]

    class Handler(BaseHTTPRequestHandler):
        server_version = "builder-cache"

        def do_GET(self) -> None:
            self.respond(send_body=True)

        def do_HEAD(self) -> None:
            self.respond(send_body=False)

        def respond(self, *, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            if not parts and path == "/":
                self.people_page(send_body)
            elif parts[:1] == ["env"] and len(parts) >= 7 and parts[6] == "simple":
                env = Environment.from_path(parts[1:6])
                if env is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.index_page(env, parts[:7], parts[7:], path, send_body)
            elif parts[:1] == ["simple"]:
                self.index_page(None, parts[:1], parts[1:], path, send_body)
            elif parts[:1] == ["variants"] and len(parts) >= 5 and parts[4] == "simple":
                self.variants_page(parts[:5], parts[5:], path, send_body)
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
            self.listing_page(root, rest, lambda: index.listing((e.meta for e in cache.entries()), env), path,
                              send_body)

        def variants_page(self, root: list[str], rest: list[str], path: str, send_body: bool) -> None:
            """A variants root's pages and its {name}-{version}-variants.json files (PEP 825)."""
            where = VariantsRoot.from_path(root[1:4])
            if where is None or len(rest) > 2:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            projects, documents = index.variant_listing((e.meta for e in cache.entries()), where)
            if len(rest) == 2:
                document = documents.get("/".join(rest))
                if document is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.body(document.encode(), "application/json", send_body)
                return
            self.listing_page(root, rest, lambda: projects, path, send_body)

        def listing_page(self, root: list[str], rest: list[str], listed: Callable[[], Mapping[str, Any]],
                         path: str, send_body: bool) -> None:
            """A root's page (rest empty) or a project's, in the type the client asks for: the
            folder form and the project's normalized name by redirect, an unknown project 404."""
            if not path.endswith("/"):
                self.redirect(path + "/")
                return
            project = rest[0] if rest else None
            if project is not None and canonicalize_name(project) != project:
                self.redirect(f"/{'/'.join(root)}/{canonicalize_name(project)}/")
                return
            projects = listed()
            if project is not None and project not in projects:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            kind = page_type(self.headers.get("Accept", ""))
            if project is None:
                text = index.root_json(projects) if kind == index.JSON_TYPE else index.root_html(projects)
            else:
                files = projects[project]
                text = index.project_json(project, files) if kind == index.JSON_TYPE else index.project_html(files)
            self.body(text.encode(), kind, send_body, Vary="Accept")

        def body(self, data: bytes, kind: str, send_body: bool, **extra: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_headers(kind, len(data), **extra)
            if send_body:
                self.wfile.write(data)

        def people_page(self, send_body: bool) -> None:
            entries = cache.entries()
            by_key = {e.key: e for e in entries}
            chosen = page.parse_env(parse_qs(urlsplit(self.path).query).get("env", [""])[0])
            fallback = f"http://{server.server_address[0]!s}:{server.server_address[1]}"
            body = page.render([e.meta for e in entries], base=page.server_base(self.headers.get("Host"), fallback),
                               chosen=chosen, provenance=lambda m: provenance(by_key[str(m["key"])]),
                               matrix=matrix).encode()
            self.body(body, "text/html; charset=utf-8", send_body)

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

    server = ThreadingHTTPServer((host, port), Handler)
    return server

