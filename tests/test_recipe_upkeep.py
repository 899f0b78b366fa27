"""`builder recipe check` and `builder recipe add-version` against a real index on 127.0.0.1 that
serves tests/fixtures/upstream's package `tinyup`: 1.0.0 (the recipe's), 1.1.0 (its patch still
applies), 1.2.0 (its patch fails), 1.3.0 (yanked) and 2.0.0rc1 (a pre-release). No network."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.planning.recipe import load_recipe
from tests.conftest import FIXTURES, run_builder

UPSTREAM = FIXTURES / "upstream"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0")


def sdist_bytes(version: str, tree: Path | None = None) -> bytes:
    """tinyup-VERSION.tar.gz of a fixture release, byte for byte the same on every run."""
    root = tree or UPSTREAM / "releases" / version
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"tinyup-{version}/{path.relative_to(root).as_posix()}")
            data = path.read_bytes()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Index:
    """A PEP 691 index of tinyup on 127.0.0.1, plus tag archives under /archive/refs/tags/."""

    routes: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def simple(self) -> str:
        return f"{self.base}/simple"


@pytest.fixture
def index() -> Iterator[Index]:
    idx = Index()
    files = []
    for version in VERSIONS:
        data = sdist_bytes(version)
        idx.routes[f"/files/tinyup-{version}.tar.gz"] = ("application/octet-stream", data)
        idx.routes[f"/archive/refs/tags/{version}.tar.gz"] = ("application/octet-stream", data)
        files.append({"filename": f"tinyup-{version}.tar.gz", "url": f"../../files/tinyup-{version}.tar.gz",
                      "hashes": {"sha256": sha256(data)}})
    files.append({"filename": "tinyup-1.1.0-py3-none-any.whl", "url": "../../files/none.whl", "hashes": {}})
    files.append({"filename": "tinyup-1.3.0.tar.gz", "url": "../../files/tinyup-1.3.0.tar.gz", "hashes": {},
                  "yanked": "broken build"})
    files.append({"filename": "tinyup-2.0.0rc1.tar.gz", "url": "../../files/tinyup-2.0.0rc1.tar.gz", "hashes": {}})
    page = {"meta": {"api-version": "1.0"}, "name": "tinyup", "files": files}
    idx.routes["/simple/tinyup/"] = ("application/vnd.pypi.simple.v1+json", json.dumps(page).encode())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idx.requested.append(self.path)
            route = idx.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", route[0])
            self.send_header("Content-Length", str(len(route[1])))
            self.end_headers()
            self.wfile.write(route[1])

        def log_message(self, format: str, *args: object) -> None:
            pass

    idx.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=idx.server.serve_forever, daemon=True)
    thread.start()
    yield idx
    idx.server.shutdown()
    idx.server.server_close()
    thread.join()


RECIPE = """\
name = "tinyup"
description = "a fixture upstream"
backend = "torch-ext"
default_version = "1.0.0"

# tinyup's sdists, from the test's index.
[versions."1.0.0"]
source = {source}
requires = {{ torch = ">=2.0" }}  # kept with the version

[build]
job_memory_gb = 1
requirements = ["setuptools"]

# The archs builder asks for.
[[patches]]
file = "tinyup/any-arch.patch"
when = {{ version = "==1.0.0" }}

# An older era's patch: never tried on a new release.
[[patches]]
file = "tinyup/old.patch"
when = {{ version = "<1.0" }}

[variants.fast]
description = "a variant without patches"
choices = ["on", "off"]
default = "on"
env = {{ TINYUP_FAST = "0" }}
versions = "==1.0.0"
"""


def write_recipe(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(UPSTREAM / "patches", folder / "patches", dirs_exist_ok=True)
    path = folder / "tinyup.toml"
    path.write_text(RECIPE.format(source=source))
    return path


def pypi_source() -> str:
    return f'{{ pypi = "tinyup", file = "tinyup-1.0.0.tar.gz", sha256 = "{sha256(sdist_bytes("1.0.0"))}" }}'


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """A recipe-path folder holding the tinyup recipe over the index's sdists."""
    write_recipe(tmp_path / "recipes", pypi_source())
    return tmp_path / "recipes"


def builder(index: Index, recipes: Path, *args: str) -> tuple[int, dict | None, str]:
    """The CLI with --json: (exit code, the JSON document, stderr)."""
    env = {"BUILDER_INDEX_URL": index.simple, "BUILDER_RECIPE_PATH": str(recipes)}
    result = run_builder(*args, "--cache", str(recipes.parent / "cache"), "--json", env=env, timeout=300)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else None, result.stderr


def rules_of(release: dict) -> dict[str, dict]:
    return {rule["name"]: rule for rule in release["rules"]}


def test_check_lists_the_new_releases_and_what_each_would_take(index: Index, recipes: Path) -> None:
    code, data, _ = builder(index, recipes, "recipe", "check", "tinyup")
    assert code == 0 and data is not None
    [check] = data["recipes"]
    assert check["unknown_releases"] == ["1.1.0", "1.2.0"]  # not the yanked 1.3.0, not 2.0.0rc1
    assert data["unknown_releases"] == ["tinyup 1.1.0", "tinyup 1.2.0"]
    applies, fails = check["releases"]

    assert applies["verdict"] == "ready: add-version widens 2 ranges"
    assert applies["source"]["sha256"] == sha256(sdist_bytes("1.1.0"))
    assert applies["source"]["sha256_from"] == "the index's, checked against the download"
    rules = rules_of(applies)
    assert set(rules) == {"tinyup/any-arch.patch", "fast"}  # the older era's patch is not tried
    assert rules["tinyup/any-arch.patch"]["applies"] is True
    assert rules["tinyup/any-arch.patch"]["widened"] == ">=1.0.0,<=1.1.0"
    assert rules["fast"]["widened"] == ">=1.0.0,<=1.1.0"
    assert applies["requirements"] == {"compared_with": "1.0.0", "added": ["packaging (setup.py)"], "removed": [],
                                       "error": None}

    assert fails["verdict"] == "needs a new patch: tinyup/any-arch.patch (tinyup/arch.py hunk #1 (at line 1))"
    patch = rules_of(fails)["tinyup/any-arch.patch"]
    assert patch["applies"] is False and patch["widened"] is None
    [hunk] = patch["dry_runs"][0]["hunks"]
    assert hunk["file"] == "tinyup/arch.py" and hunk["hunk"] == 1
    assert hunk["text"].splitlines()[0] == "@@ -1,3 +1,5 @@"
    assert '-ARCHS = ["80", "90"]' in hunk["text"].splitlines()
    assert "/files/tinyup-1.3.0.tar.gz" not in index.requested


def test_check_shows_a_table_and_fails_on_new_releases_when_asked(index: Index, recipes: Path) -> None:
    env = {"BUILDER_INDEX_URL": index.simple, "BUILDER_RECIPE_PATH": str(recipes)}
    cache = str(recipes.parent / "cache")
    shown = run_builder("recipe", "check", "tinyup", "--cache", cache, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert "tinyup 1.1.0: ready: add-version widens 2 ranges\n" in shown.stdout
    assert "tinyup 1.2.0: needs a new patch: tinyup/any-arch.patch" in shown.stdout
    assert "patch tinyup/any-arch.patch: applies; ==1.0.0 -> >=1.0.0,<=1.1.0" in shown.stdout
    assert '      -ARCHS = ["80", "90"]' in shown.stdout  # the failing hunk, for whoever writes the patch
    assert "releases the recipes do not know: tinyup 1.1.0, tinyup 1.2.0" in shown.stdout

    failing = run_builder("recipe", "check", "tinyup", "--fail-on-new", "--cache", cache, env=env, timeout=300)
    assert failing.returncode == 1
    assert "releases the recipes do not know: tinyup 1.1.0, tinyup 1.2.0" in failing.stdout

    pre = builder(index, recipes, "recipe", "check", "tinyup", "--pre", "--version", "2.0.0rc1")[1]
    assert pre is not None
    [release] = pre["recipes"][0]["releases"]
    assert release["version"] == "2.0.0rc1" and release["verdict"].startswith("source unavailable")


def test_check_through_an_index_that_refuses_says_so_and_claims_nothing(index: Index, recipes: Path) -> None:
    env = {"BUILDER_INDEX_URL": index.simple, "BUILDER_RECIPE_PATH": str(recipes)}
    refused = run_builder("recipe", "check", "tinyup", "-i", "http://127.0.0.1:1/simple",  # -i wins over the variable
                          "--cache", str(recipes.parent / "cache"), env=env, timeout=300)
    assert refused.returncode == 1
    assert "error: tinyup: cannot fetch http://127.0.0.1:1/simple/tinyup/" in refused.stdout
    assert "every recipe knows" not in refused.stdout


def test_add_version_records_the_release_and_widens_what_applies(index: Index, recipes: Path) -> None:
    path = recipes / "tinyup.toml"
    code, data, stderr = builder(index, recipes, "recipe", "add-version", "tinyup", "1.1.0")
    assert code == 0, stderr
    assert data is not None and data["written"] == str(path)
    assert data["widened"] == {"tinyup/any-arch.patch": ">=1.0.0,<=1.1.0", "fast": ">=1.0.0,<=1.1.0"}
    assert data["needs_patch"] == [] and data["default_version"] is False

    text = path.read_text()
    expected = RECIPE.format(source=pypi_source())
    new_table = textwrap.dedent(f"""\
        [versions."1.1.0"]
        source = {{ pypi = "tinyup", file = "tinyup-1.1.0.tar.gz", sha256 = "{sha256(sdist_bytes("1.1.0"))}" }}
        requires = {{ torch = ">=2.0" }}

        """)
    expected = expected.replace("# tinyup's sdists", new_table + "# tinyup's sdists")
    expected = expected.replace('when = { version = "==1.0.0" }', 'when = { version = ">=1.0.0,<=1.1.0" }')
    expected = expected.replace('versions = "==1.0.0"', 'versions = ">=1.0.0,<=1.1.0"')
    assert text == expected  # comments, order and spacing kept; only the new table and the ranges change

    recipe = load_recipe(str(path))
    assert recipe.default_version == "1.0.0" and sorted(recipe.versions) == ["1.0.0", "1.1.0"]
    facts = {"version": "1.1.0", "torch": "2.14.1", "cuda": "13.0", "python": "3.11"}
    assert [p.file for p in recipe.patches_for(facts)] == ["tinyup/any-arch.patch"]
    env = {"BUILDER_INDEX_URL": index.simple, "BUILDER_RECIPE_PATH": str(recipes)}
    fetched = run_builder("fetch", "tinyup", "--version", "1.1.0", "--cache", str(recipes.parent / "cache"),
                          env=env)
    assert fetched.returncode == 0, fetched.stderr

    again = builder(index, recipes, "recipe", "add-version", "tinyup", "1.1.0")
    assert again[0] == 3 and again[1] is not None and "already has version 1.1.0" in again[1]["error"]


def test_add_version_reports_the_patch_that_does_not_apply(index: Index, recipes: Path) -> None:
    env = {"BUILDER_INDEX_URL": index.simple, "BUILDER_RECIPE_PATH": str(recipes)}
    result = run_builder("recipe", "add-version", "tinyup", "1.2.0", "--default",
                         "--cache", str(recipes.parent / "cache"), env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "tinyup/arch.py hunk #1 (at line 1):" in result.stdout
    assert '      -ARCHS = ["80", "90"]' in result.stdout
    assert "write the patch for 1.2.0" in result.stdout
    recipe = load_recipe(str(recipes / "tinyup.toml"))
    assert recipe.default_version == "1.2.0"
    assert str(recipe.patches[0].when.specs["version"]) == "==1.0.0"  # left for a person to decide
    assert str(recipe.variants["fast"].versions) == "<=1.2.0,>=1.0.0"  # no patch: nothing to fail


def test_add_version_refuses_a_recipe_outside_the_recipe_path(index: Index, tmp_path: Path) -> None:
    elsewhere = write_recipe(tmp_path / "elsewhere", pypi_source())
    before = elsewhere.read_text()
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    code, data, _ = builder(index, recipes, "recipe", "add-version", str(elsewhere), "1.1.0")
    assert code == 2 and data is not None
    assert data["error"] == f"{elsewhere} is outside your recipe path ({elsewhere.parent}); " \
                            "add-version writes only recipes there"
    assert "--output PATH" in data["hint"]
    shipped = builder(index, recipes, "recipe", "add-version", "flash-attn", "9.9.9")[1]
    assert shipped is not None and "(builder's shipped recipes)" in shipped["error"]
    assert index.requested == []  # refused before asking anything

    copy = tmp_path / "out" / "tinyup.toml"
    code, data, stderr = builder(index, recipes, "recipe", "add-version", str(elsewhere), "1.1.0",
                                 "--output", str(copy))
    assert code == 0, stderr
    assert elsewhere.read_text() == before
    assert '[versions."1.1.0"]' in copy.read_text()


def test_a_url_source_is_checked_and_added_from_a_given_archive(index: Index, tmp_path: Path) -> None:
    """A tag archive whose host cannot be reached (port 1 refuses): the releases still come from
    the index, the archive from --source, and its sha256 is said to be the given file's."""
    unreachable = "http://127.0.0.1:1/archive/refs/tags/1.0.0.tar.gz"
    source = f'{{ url = "{unreachable}", file = "tinyup-1.0.0.tar.gz", sha256 = "{sha256(sdist_bytes("1.0.0"))}" }}'
    recipes = tmp_path / "recipes"
    write_recipe(recipes, source)
    data = builder(index, recipes, "recipe", "check", "tinyup")[1]
    assert data is not None
    releases = data["recipes"][0]["releases"]
    assert [r["version"] for r in releases] == ["1.1.0", "1.2.0"]
    assert all(r["verdict"].startswith("source unavailable: cannot fetch http://127.0.0.1:1/archive/refs/tags/1.")
               for r in releases)

    archive = tmp_path / "tinyup-1.1.0.tar.gz"
    archive.write_bytes(sdist_bytes("1.1.0"))
    data = builder(index, recipes, "recipe", "check", "tinyup", "--version", "1.1.0", "--source", str(archive))[1]
    assert data is not None
    [release] = data["recipes"][0]["releases"]
    assert release["verdict"] == "ready: add-version widens 2 ranges"
    assert release["requirements"]["error"].startswith("cannot fetch http://127.0.0.1:1/")

    code, added, stderr = builder(index, recipes, "recipe", "add-version", "tinyup", "1.1.0",
                                  "--source", str(archive))
    assert code == 0, stderr
    assert added is not None
    assert added["notes"][0] == f"sha256 {sha256(archive.read_bytes())}: that of the file given (--source {archive})"
    table = tomllib.loads((recipes / "tinyup.toml").read_text())["versions"]["1.1.0"]
    assert table["source"] == {"url": unreachable.replace("1.0.0", "1.1.0"), "file": "tinyup-1.1.0.tar.gz",
                               "sha256": sha256(archive.read_bytes())}
    stored = recipes.parent / "cache" / "sources" / "tinyup-1.1.0.tar.gz"
    assert stored.read_bytes() == archive.read_bytes()  # a build finds it without the host


# --- the parts, without an index ------------------------------------------------------------


@pytest.mark.parametrize(("spec", "new", "widened"), [
    (">=2.7.3,<=2.8.3.post1", "2.8.3.post2", ">=2.7.3,<=2.8.3.post2"),
    ("==2.8.3", "2.8.3.post2", ">=2.8.3,<=2.8.3.post2"),
    (">=1.3.0,<1.7", "1.7.1", ">=1.3.0,<=1.7.1"),
    ("==0.0.9", "0.1.0", ">=0.0.9,<=0.1.0"),
    ("==2.8.*", "2.9.0", ">=2.8,<=2.9.0"),
    (">=2.7", "2.9", ">=2.7"),
])
def test_a_range_is_widened_by_its_one_excluding_bound(spec: str, new: str, widened: str) -> None:
    from packaging.version import Version

    from builder.upkeep.ranges import widen

    assert widen(spec, Version(new)) == widened


def test_a_range_that_would_take_in_another_rules_version_is_refused() -> None:
    from packaging.version import Version

    from builder.errors import RecipeError
    from builder.upkeep.ranges import widen

    with pytest.raises(RecipeError, match=r"would also change 2\.8\.3"):
        widen(">=2.3.0,<2.7.3", Version("2.8.3.post2"), [Version("2.8.3"), Version("2.6.3")])
    with pytest.raises(RecipeError, match="cannot be widened automatically"):
        widen("!=2.9", Version("2.9"))


def test_the_failing_hunk_is_read_from_the_patch_file(tmp_path: Path) -> None:
    from builder.building.patching import hunk_text

    patch = tmp_path / "two.patch"
    patch.write_text(textwrap.dedent("""\
        --- a/a.py
        +++ b/a.py
        @@ -1,2 +1,2 @@
        -x = 1
        +x = 2
         y = 1
        @@ -10 +10 @@
        --- a dash line removed
        +--- a dash line added
        --- a/b.py
        +++ b/b.py
        @@ -3 +3 @@
        -z = 0
        +z = 1
        """))
    assert hunk_text(patch, "a.py", 2) == "@@ -10 +10 @@\n--- a dash line removed\n+--- a dash line added"
    assert hunk_text(patch, "b.py", 1) == "@@ -3 +3 @@\n-z = 0\n+z = 1"
    assert hunk_text(patch, "b.py", 2) == ""


def test_an_html_index_marks_yanked_files() -> None:
    from builder.index_client import _from_html

    page = ('<a href="x-1.0.tar.gz#sha256=ab">x-1.0.tar.gz</a>'
            '<a href="x-1.1.tar.gz" data-yanked="bad">x-1.1.tar.gz</a>')
    found = _from_html(page, "https://example.invalid/simple/x/")
    assert [(f.filename, f.sha256, f.yanked) for f in found] == [("x-1.0.tar.gz", "ab", False),
                                                                  ("x-1.1.tar.gz", None, True)]
