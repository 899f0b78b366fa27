"""The page `builder cache serve` answers at `/` (builder/store/page.py): asked by plain HTTP for its
content, its escaping and the paths it must not show, and in a real browser (Debian's chromium and
chromedriver, driven by selenium, headless) over the session's real sm_86 and sm_80 builds served by
the real `builder cache serve --matrix-file` on loopback: the builds are listed, typing in the filter
narrows the table, the matrix says which cells are built and which are missing, and the install line
shown for an environment installs the build that loads there when it is run."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.store.cache import Cache
from builder.store.page import PYPI, MatrixCell
from tests.conftest import (
    ROOT,
    TORCHEXT,
    cache_serve,
    installed_version,
    installer_env,
    make_venv,
    running_torch_cuda,
    running_torch_release,
    serving,
)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None or importlib.util.find_spec("selenium") is None,
    reason="needs Debian's chromium and chromium-driver (make system-tools) and selenium (make setup)")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "text/html; charset=utf-8"
        return str(response.read().decode())


def hostile_cache(root: Path) -> Cache:
    """A cache of one entry whose every field a user could set holds markup (no real wheel)."""
    key = "c0ffee" * 4
    wheel = "evil_ext-1.0+cu130torch2.14.1cxx11abiTRUE.sm86-cp311-cp311-linux_x86_64.whl"
    folder = root / "entries" / key
    folder.mkdir(parents=True)
    (folder / wheel).write_bytes(b"not a zip")
    meta = {"key": key, "wheel": wheel, "sha256": "0" * 64, "size": 2_500_000, "recipe": "<script>alert(1)</script>",
            "version": "1.0", "created": "2026-12-06T10:00:00Z", "log": "/secret/logs/evil.log",
            "built_by": {"user": "<b>mallory</b>", "host": "gpu&1"},
            "plan": {"archs": ["86"], "variants": {"hdim": "<i>64</i>"},
                     "target": {"python_tag": "cp311", "torch": "2.14.1+cu130", "torch_cuda": "13.0",
                                "cxx11_abi": True, "python": "/secret/venv/bin/python"},
                     "toolkit": {"version": "13.0.88", "root": "/secret/cuda"},
                     "host_compiler": {"cxx": "/secret/bin/g++", "version": "12.2.0"},
                     "source": {"path": "/secret/src"}}}
    (folder / "entry.json").write_text(json.dumps(meta))
    return Cache(root)


def test_page_escapes_entries_and_shows_no_paths(tmp_path: Path) -> None:
    with serving(hostile_cache(tmp_path / "cache")) as url:
        page = get(f"{url}/?env=cp311/torch2.14.1/cu130/cxx11abiTRUE/sm86")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{url}/nothing", timeout=60)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;mallory&lt;/b&gt;@gpu&amp;1" in page and "hdim=&lt;i&gt;64&lt;/i&gt;" in page
    assert "/secret" not in page and "g++ 12.2.0" in page and "2.5 MB" in page
    assert f"{url}/env/cp311/torch2.14.1/cu130/cxx11abiTRUE/sm86/simple/" in page  # the chosen root
    assert "--only-binary evil-ext" in page


def test_page_lists_the_served_builds(fixture_builds: dict, served_builds: dict) -> None:
    page = get(f"{served_builds['url']}/")
    for arch in ("86", "80"):
        assert Path(fixture_builds[arch]["wheel"]).name in page
    meta = Cache(fixture_builds["cache"]).entries()[0].meta
    for path in (str(fixture_builds["cache"]), str(meta["log"]), str(meta["plan"]["target"]["python"]),
                 str(TORCHEXT)):
        assert path not in page
    assert "Choose an environment" in page and 'id="matrix"' not in page  # no matrix file


@pytest.fixture(scope="module")
def served_with_matrix(fixture_builds: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real `builder cache serve --port 0 --matrix-file` over the fixture builds: sm_80 and sm_86
    built, sm_90 missing, sm_35 a cell CUDA 13 cannot build."""
    matrix = tmp_path_factory.mktemp("matrix") / "matrix.toml"
    matrix.write_text(f'[matrix]\nrecipe = ["{fixture_builds["recipe"]}"]\n'
                      f'python = ["{sys.version_info.major}.{sys.version_info.minor}"]\n'
                      f'torch = ["{running_torch_release()}"]\ncuda = ["{running_torch_cuda()}"]\n'
                      'arch = ["80", "86", "90", "35"]\n')
    with cache_serve("--cache", str(fixture_builds["cache"]), "--matrix-file", str(matrix)) as simple:
        yield simple.removesuffix("/simple/")


def test_page_shows_the_matrix_cells_built_and_missing(served_with_matrix: str) -> None:
    page = get(f"{served_with_matrix}/")
    assert "4 cells: 2 built, 1 missing, 1 cannot be built." in page
    assert "sm_90</td><td>missing" in page and "cannot target sm_35" in page


def test_matrix_status_matches_on_the_toolkit_and_arch() -> None:
    from builder.fleet.matrix import Cell
    from builder.store.page import matrix_status

    meta = {"key": "k", "recipe": "r", "version": "1.0",
            "plan": {"archs": ["86"], "toolkit": {"version": "13.0.88"},
                     "target": {"python_tag": "cp312", "torch": "2.14.1+cu130", "torch_cuda": "13.0",
                                "cxx11_abi": True}}}
    cell = Cell("recipes/r.toml", "1.0", "3.12", "2.14.1", "13.0", "86")
    assert matrix_status(MatrixCell(cell, "r"), [meta]) == ("built", ["k"])
    for other in (Cell("r", "1.0", "3.12", "2.14.1", "12.8", "86"), Cell("r", "1.0", "3.11", "2.14.1", "13.0", "86"),
                  Cell("r", "1.0", "3.12", "2.14.1", "13.0", "80"), Cell("r", "1.1", "3.12", "2.14.1", "13.0", "86")):
        assert matrix_status(MatrixCell(other, "r"), [meta]) == ("missing", [])
    assert matrix_status(MatrixCell(cell, "r", "no torch"), [meta]) == ("cannot be built", [])


def key_of(fixture_builds: dict, arch: str) -> str:
    return str(fixture_builds[arch]["cache_key"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium through chromedriver, both Debian's."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@needs_browser
def test_the_page_in_a_browser_lists_filters_and_gives_a_line_that_installs(
        browser: Any, served_with_matrix: str, fixture_builds: dict, pip_releases: dict, pypi_substitute: str,
        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def visible(table: str) -> list[str]:
        return [row.text for row in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr") if row.is_displayed()]

    browser.get(f"{served_with_matrix}/")
    wheels = {arch: Path(fixture_builds[arch]["wheel"]).name for arch in ("86", "80")}
    rows = visible("builds")
    assert len(rows) == 2 and all(any(w in row for row in rows) for w in wheels.values()), rows
    assert len(visible("matrix")) == 4

    browser.find_element(By.ID, "filter").send_keys("sm_80")
    rows = visible("builds")
    assert len(rows) == 1 and wheels["80"] in rows[0], rows
    assert browser.find_element(By.ID, "shown").text == "1"
    assert [row.split()[-2:] for row in visible("matrix")] == [["built", key_of(fixture_builds, "80")]]

    choice = Select(browser.find_element(By.ID, "env"))
    value = next(o.get_attribute("value") for o in choice.options if o.get_attribute("value").endswith("/sm86"))
    choice.select_by_value(value)  # the form is sent on change: the page comes back for that environment
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "root"))
    rows = visible("builds")  # only the builds this environment's root lists
    assert len(rows) == 1 and wheels["86"] in rows[0], rows
    root = browser.find_element(By.ID, "root").text
    lines = [pre.text.replace(PYPI, pypi_substitute) for pre in  # PyPI's stand-in: the test stays offline
             browser.find_elements(By.CSS_SELECTOR, "pre.install")]
    assert lines[0].startswith(f"ROOT=$(builder index-url --server {served_with_matrix} --arch 86) && pip install")
    assert shlex.split(lines[1])[:4] == ["pip", "install", "--only-binary", "fixture-ext"] and root in lines[1]
    for n, line in enumerate(lines[:2]):  # each line as a user pastes it, into a fresh venv of its own
        python = make_venv(tmp_path / f"venv{n}")
        result = run_pasted(line, python, tmp_path / f"bin{n}", pip_releases["current"] / "pip")
        assert result.returncode == 0, line + "\n" + result.stdout + result.stderr
        assert installed_version(python, "fixture-ext") == wheels["86"].split("-")[1]


def run_pasted(line: str, python: Path, bin_dir: Path, pip: Path) -> subprocess.CompletedProcess[str]:
    """`line` run by bash with `builder` (this checkout's, asking about `python`: a user runs it with
    the interpreter that installs) and `pip` (the current pip, installing into `python`) first on PATH."""
    bin_dir.mkdir()
    (bin_dir / "builder").write_text(f'#!/bin/sh\nexec {sys.executable} -m builder "$@" --python {python}\n')
    (bin_dir / "pip").write_text(f'#!/bin/sh\nexec {python} {pip} "$@" --no-cache-dir\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    env = installer_env()
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**env, "PATH": f"{bin_dir}:{env['PATH']}"})
