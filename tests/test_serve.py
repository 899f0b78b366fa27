"""`builder cache serve` speaks to every pip in use: the real server on loopback over real wheels of
the fixture, asked by raw HTTP (Accept, HEAD, Range, PEP 658 metadata) and by pip 22.0.2 (which
takes only text/html), the current pip and uv, each installing the fixture from an environment's
root with the extra index beside it."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from builder.store import index
from builder.wheelfile import read_member
from tests.conftest import builder_json, install_from, installed_version, make_venv

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def fetch(url: str, method: str = "GET", **headers: str) -> tuple[int, Message, bytes]:
    """(status, headers, body) of one request, 4xx included."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def env_root(fixture_builds: dict, served: dict, python: Path, arch: str = "86") -> str:
    return str(builder_json("index-url", "--python", str(python), "--arch", arch, "--cache",
                            str(fixture_builds["cache"]), "--server", served["url"])["url"])


@pytest.fixture
def root(fixture_builds: dict, served_builds: dict, tmp_path: Path) -> str:
    return env_root(fixture_builds, served_builds, make_venv(tmp_path / "venv"))


@pytest.mark.parametrize(("accept", "kind"), [
    (None, "text/html"), ("text/html", "text/html"), ("*/*", "text/html"),
    ("application/vnd.pypi.simple.v1+html", index.HTML_TYPE), (PIP_ACCEPT, index.JSON_TYPE),
])
def test_pages_in_the_type_each_client_takes(served_builds: dict, root: str, accept: str | None, kind: str) -> None:
    headers = {"Accept": accept} if accept else {}
    for url in (f"{served_builds['url']}/simple/fixture-ext/", root + "fixture-ext/"):
        status, got, body = fetch(url, **headers)
        assert status == 200 and got["Content-Type"] == kind and got["Vary"] == "Accept"
        if kind == index.JSON_TYPE:
            assert json.loads(body)["name"] == "fixture-ext"
        else:
            assert body.startswith(b"<!DOCTYPE html>")


def test_pages_carry_requires_python_and_the_metadata_hash(fixture_builds: dict, root: str) -> None:
    wheel = Path(fixture_builds["86"]["wheel"])
    metadata = read_member(wheel, "METADATA") or b""
    sha = hashlib.sha256(metadata).hexdigest()
    _, _, html = fetch(root + "fixture-ext/", Accept="text/html")
    assert html.decode().count("<a ") == 1 and wheel.name in html.decode()  # the sm_86 build only
    assert 'data-requires-python="&gt;=3.9"' in html.decode()
    assert f'data-dist-info-metadata="sha256={sha}"' in html.decode()
    assert f'data-core-metadata="sha256={sha}"' in html.decode()
    _, _, body = fetch(root + "fixture-ext/", Accept=PIP_ACCEPT)
    [listed] = json.loads(body)["files"]
    assert listed["requires-python"] == ">=3.9" and listed["core-metadata"] == {"sha256": sha}
    assert listed["dist-info-metadata"] == {"sha256": sha} and listed["size"] == wheel.stat().st_size
    status, _, served_metadata = fetch(urllib.parse.urljoin(root + "fixture-ext/", listed["url"]) + ".metadata")
    assert status == 200 and served_metadata == metadata  # PEP 658: byte for byte the wheel's METADATA


def test_head_and_range_requests(fixture_builds: dict, served_builds: dict) -> None:
    entry: dict[str, Any] = fixture_builds["86"]
    wheel = Path(entry["wheel"])
    data, size = wheel.read_bytes(), wheel.stat().st_size
    url = f"{served_builds['url']}/entries/{entry['cache_key']}/{wheel.name}"
    status, headers, body = fetch(url, "HEAD")
    assert (status, body) == (200, b"") and headers["Content-Length"] == str(size)
    assert headers["Accept-Ranges"] == "bytes"
    for spec, first, last in (("bytes=0-9", 0, 9), (f"bytes={size - 100}-", size - 100, size - 1),
                              ("bytes=-22", size - 22, size - 1), (f"bytes=10-{size * 2}", 10, size - 1)):
        status, headers, body = fetch(url, Range=spec)
        assert status == 206 and headers["Content-Range"] == f"bytes {first}-{last}/{size}", spec
        assert body == data[first:last + 1] and headers["Content-Length"] == str(last - first + 1)
    status, headers, _ = fetch(url, Range=f"bytes={size}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, headers, body = fetch(url, Range="bytes=0-1,5-6")  # several ranges: the whole file
    assert status == 200 and body == data
    status, headers, body = fetch(f"{served_builds['url']}/simple/", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


@pytest.mark.parametrize("installer", ["pip-22.0.2", "pip-current", "uv"])
def test_every_installer_installs_from_the_served_environment_root(
        fixture_builds: dict, served_builds: dict, pip_releases: dict, pypi_substitute: str, installer: str,
        tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    root = env_root(fixture_builds, served_builds, python)
    seen = len(served_builds["requests"])
    result = install_from(installer, python, root, pypi_substitute, "fixture-ext", pip_releases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_version(python, "fixture-ext") == Path(fixture_builds["86"]["wheel"]).name.split("-")[1]
    requests = served_builds["requests"][seen:]
    assert any(r.startswith("GET /env/") and r.endswith(" 200") for r in requests), requests
    if installer == "pip-current":
        assert any(".whl.metadata 200" in r for r in requests), requests  # PEP 658 used
