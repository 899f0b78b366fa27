"""`builder cache serve`: a cache as a package index over HTTP.

/simple/ and /simple/<project>/ answer PEP 691 JSON or PEP 503 HTML by the Accept header;
/entries/<key>/<file> and /index.json serve the stored files, so another builder can use the
server as a read-only --cache-url. Pages are made from the entries at each request, so what is
built while the server runs shows up at once. Nothing outside entries/ and index.json is served.
"""

from __future__ import annotations

import re
import shutil
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from builder.store import index
from builder.store.cache import Cache

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def wants_json(accept: str) -> bool:
    """PEP 691 content negotiation, simplified: JSON when the client names it ahead of HTML."""
    if index.JSON_TYPE not in accept:
        return False
    html_at = min((accept.find(t) for t in (index.HTML_TYPE, "text/html") if t in accept), default=len(accept))
    return accept.find(index.JSON_TYPE) < html_at


def make_server(cache: Cache, host: str, port: int) -> ThreadingHTTPServer:
    """A server over `cache`, bound but not yet serving (port 0 picks a free port)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "builder-cache"

        def do_GET(self) -> None:
            self.respond(send_body=True)

        def do_HEAD(self) -> None:
            self.respond(send_body=False)

        def respond(self, *, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["simple"] and len(parts) <= 2:
                self.index_page(parts[1] if len(parts) == 2 else None, path, send_body)
            elif parts == ["index.json"]:
                self.file(cache.root / "index.json", "application/json", send_body)
            elif len(parts) == 3 and parts[0] == "entries" and all(_SAFE_PART.match(p) for p in parts[1:]):
                kind = "application/json" if parts[2].endswith(".json") else "application/octet-stream"
                self.file(cache.root.joinpath(*parts), kind, send_body)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def index_page(self, project: str | None, path: str, send_body: bool) -> None:
            if not path.endswith("/"):
                self.redirect(path + "/")
                return
            if project is not None and canonicalize_name(project) != project:
                self.redirect(f"/simple/{canonicalize_name(project)}/")
                return
            as_json = wants_json(self.headers.get("Accept", ""))
            projects = index.project_files((e.meta for e in cache.entries()),
                                           lambda m: f"/entries/{m['key']}/{m['wheel']}")
            if project is None:
                body = index.root_json(projects) if as_json else index.root_html(projects)
            elif project in projects:
                files = projects[project]
                body = index.project_json(project, files) if as_json else index.project_html(files)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            self.send_bytes(body.encode(), index.JSON_TYPE if as_json else index.HTML_TYPE, send_body)

        def file(self, path: Path, content_type: str, send_body: bool) -> None:
            if not path.is_file():
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            if send_body:
                with path.open("rb") as handle:
                    shutil.copyfileobj(handle, self.wfile)

        def send_bytes(self, body: bytes, content_type: str, send_body: bool) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Vary", "Accept")
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def redirect(self, location: str) -> None:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)
