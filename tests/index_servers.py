"""Package indexes served for real on 127.0.0.1, each with a log of the requests it answered:

- `Index`: routes in memory; a project page is PEP 691 JSON (what PyPI answers builder's Accept).
- `StaticMirror`: `http.server` over a folder laid out as a static PEP 503 mirror (what
  `bandersnatch` or a plain web server over a wheelhouse serves): /simple/<project>/index.html with
  an anchor per file, `#sha256=` in its URL, served as text/html whatever the client asks for.

The fixtures `index` and `static_mirror` (tests/conftest.py) start one for a test and stop it after.
"""

from __future__ import annotations

import hashlib
import html
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

Requests = list[tuple[str, str | None]]
"""(path, Accept header) of each GET, in order."""


@dataclass
class Served:
    """A server on a free loopback port, running in a thread."""

    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    requests: Requests = field(default_factory=list)

    def paths(self) -> list[str]:
        """The paths asked for, in order."""
        return [path for path, _ in self.requests]

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()
            self.server = None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a test of timeouts) is no error of the server's."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serving(served: Served, handler: type[BaseHTTPRequestHandler]) -> Iterator[None]:
    served.server = _Server(("127.0.0.1", 0), handler)
    served.thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    served.thread.start()
    try:
        yield
    finally:
        served.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Index(Served):
    """A PEP 691 JSON index from routes in memory."""

    routes: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def publish(self, project: str, file: str, data: bytes, *, listed: str | None) -> None:
        """Serve `data` at /files/<file> and list it on /simple/<project>/ (relative URL)."""
        hashes = {} if listed is None else {"sha256": listed}
        entry = {"filename": file, "url": f"../../files/{file}", "hashes": hashes}
        page = {"meta": {"api-version": "1.0"}, "name": project, "files": [entry]}
        self.routes[f"/simple/{project}/"] = (
            "application/vnd.pypi.simple.v1+json",
            json.dumps(page).encode(),
        )
        self.routes[f"/files/{file}"] = ("application/octet-stream", data)

    @contextmanager
    def running(self) -> Iterator[Index]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append((self.path, self.headers.get("Accept")))
                if self.path == "/slow":
                    time.sleep(1.0)
                route = index.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                content_type, body = route
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with serving(self, Handler):
            yield self


@dataclass
class StaticMirror(Served):
    """A folder served as it is: a static PEP 503 mirror (and anything else put into it)."""

    root: Path = Path()

    def put(self, path: str, data: bytes) -> str:
        """`data` served at /`path`; its URL."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{self.base}/{path.lstrip('/')}"

    def publish(self, project: str, file: str, data: bytes, *, listed: str | None = None,
                simple: str = "simple") -> str:
        """`data` at /packages/<file>, listed with `listed` (default: its own sha256) on the
        /<simple>/<project>/ page; the index URL (…/<simple>)."""
        self.put(f"packages/{file}", data)
        page = self.root / simple / canonicalize_name(project) / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        anchors = [line for line in (page.read_text().splitlines() if page.is_file() else []) if "<a " in line]
        depth = "../" * (len(Path(simple).parts) + 1)
        href = html.escape(f"{depth}packages/{file}#sha256={listed or sha256(data)}")
        anchors.append(f'    <a href="{href}">{html.escape(file)}</a><br/>')
        page.write_text("<!DOCTYPE html>\n<html><body>\n" + "\n".join(anchors) + "\n</body></html>\n")
        return f"{self.base}/{simple}"

    @contextmanager
    def running(self) -> Iterator[StaticMirror]:
        mirror = self
        root = str(self.root)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=root, **kwargs)

            def do_GET(self) -> None:
                mirror.requests.append((self.path, self.headers.get("Accept")))
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.root.mkdir(parents=True, exist_ok=True)
        with serving(self, Handler):
            yield self
