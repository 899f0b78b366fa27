"""pip and uv take the build that loads in their environment from `builder index-url`'s root, or
none, and never touch torch: real wheels of the fixture (sm_86 and sm_80), the local file index and
the real server on loopback, the current pip and uv.

"Another torch" is a venv whose torch is a stand-in (tests/conftest.py fake_torch_venv): a torch
module that answers builder's probe and a torch-2.8.0+cu128.dist-info folder, which is all that
`builder index-url`'s probe and pip's and uv's resolvers read; no 5 GB download."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from builder.files import sha256_of
from builder.store import index
from builder.wheelfile import read_member
from tests.conftest import (
    ROOT,
    builder_json,
    fake_torch_venv,
    install_from,
    installed_version,
    installer_env,
    make_venv,
    run_builder,
    running_torch_version,
)

# How each installer says that no build loads there (uv: an empty page, or no page at all in the
# file tree of an environment nothing was built for).
FAILED = {"pip-current": r"No matching distribution found for fixture-ext",
          "uv": r"no versions of fixture-ext|fixture-ext was not found in the package registry"}


def index_url(builds: dict[str, Any], python: Path, arch: str, server: str | None = None) -> str:
    args = ["--server", server] if server else []
    return str(builder_json("index-url", "--python", str(python), "--arch", arch, "--cache", str(builds["cache"]),
                            *args)["url"])


def wheel_version(build: dict[str, Any]) -> str:
    return Path(build["wheel"]).name.split("-")[1]


def test_index_url_names_the_target_environment(fixture_builds: dict, tmp_path: Path) -> None:
    torch = running_torch_version()
    matching = make_venv(tmp_path / "matching")
    found = builder_json("index-url", "--python", str(matching), "--arch", "8.6", "--cache",
                         str(fixture_builds["cache"]))
    assert found["torch"] == torch and found["gpu"] == "sm86"
    assert found["url"] == (f"{fixture_builds['cache'].resolve().as_uri()}/env/{found['python_tag']}/torch"
                            f"{torch.split('+')[0]}/{found['cuda']}/cxx11abiTRUE/sm86/simple/")
    other = fake_torch_venv(tmp_path / "other")
    served = index_url(fixture_builds, other, "sm_80", server="http://127.0.0.1:9/simple/")
    assert re.fullmatch(r"http://127\.0\.0\.1:9/env/cp3\d+/torch2\.8\.0/cu128/cxx11abiTRUE/sm80/simple/", served)
    plain = run_builder("index-url", "--python", str(matching), "--arch", "86", "--cache",
                        str(fixture_builds["cache"]), check=True)
    assert plain.stdout.strip() == found["url"]  # one line, for $(builder index-url)
    refused = run_builder("index-url", "--arch", "90a", "--cache", str(fixture_builds["cache"]))
    assert refused.returncode == 2 and "not a GPU" in refused.stderr


def test_the_wheel_leaves_torch_out_of_its_requirements(fixture_builds: dict) -> None:
    metadata = read_member(Path(fixture_builds["86"]["wheel"]), "METADATA") or b""
    assert b"Requires-Dist: torch" not in metadata  # setup.py asks for torch; the recipe drops it
    assert Path(fixture_builds["86"]["wheel"] + ".metadata").read_bytes() == metadata  # PEP 658 copy


@pytest.mark.parametrize("where", ["file", "served"])
@pytest.mark.parametrize("installer", ["pip-current", "uv"])
def test_the_environment_root_gives_the_matching_build_or_none(
        fixture_builds: dict, served_builds: dict, pip_releases: dict, pypi_substitute: str,
        installer: str, where: str, tmp_path: Path) -> None:
    server = served_builds["url"] if where == "served" else None
    matching = make_venv(tmp_path / "matching")
    torch_before = installed_version(matching, "torch")
    result = install_from(installer, matching, index_url(fixture_builds, matching, "86", server), pypi_substitute,
                          "fixture-ext", pip_releases)
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_version(matching, "fixture-ext") == wheel_version(fixture_builds["86"])
    assert installed_version(matching, "torch") == torch_before  # untouched: not the index's 2.99.0

    other = fake_torch_venv(tmp_path / "other")
    refused = install_from(installer, other, index_url(fixture_builds, other, "86", server), pypi_substitute,
                           "fixture-ext", pip_releases)
    assert refused.returncode != 0 and re.search(FAILED[installer], refused.stdout + refused.stderr), \
        refused.stdout + refused.stderr
    assert installed_version(other, "fixture-ext") is None
    assert installed_version(other, "torch") == "2.8.0+cu128"


@pytest.mark.parametrize("installer", ["pip-current", "uv"])
def test_each_gpu_gets_the_build_that_runs_on_it(fixture_builds: dict, served_builds: dict, pip_releases: dict,
                                                  pypi_substitute: str, installer: str, tmp_path: Path) -> None:
    expected = {"89": wheel_version(fixture_builds["86"]), "80": wheel_version(fixture_builds["80"]),
                "90": None}  # sm_86 runs on 8.9; neither runs on 9.0 (no PTX)
    for arch, version in expected.items():
        python = make_venv(tmp_path / f"sm{arch}")
        result = install_from(installer, python, index_url(fixture_builds, python, arch, served_builds["url"]),
                              pypi_substitute, "fixture-ext", pip_releases)
        assert (result.returncode == 0) is (version is not None), result.stdout + result.stderr
        assert installed_version(python, "fixture-ext") == version


def test_the_local_file_tree_matches_the_server(fixture_builds: dict, served_builds: dict, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    for arch in ("86", "89", "90"):
        file_root = index_url(fixture_builds, python, arch)
        served_root = index_url(fixture_builds, python, arch, served_builds["url"])
        for page in ("", "fixture-ext/"):
            on_disk = Path(urllib.parse.urlsplit(file_root).path, page, "index.html").read_text()
            with urllib.request.urlopen(served_root + page) as response:
                assert response.read().decode() == on_disk


@pytest.fixture(scope="module")
def pypi_with_the_project(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An extra index that has the project too, as PyPI has flash-attn: an sdist of a higher
    version, which no test may ever take (its bytes are no archive)."""
    root = tmp_path_factory.mktemp("pypi-project")
    sdist = root / "files" / "fixture_ext-0.2.0.tar.gz"
    sdist.parent.mkdir()
    sdist.write_bytes(b"not an archive: an installer that took this sdist failed the test")
    page = root / "simple" / "fixture-ext" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(index.project_html([index.IndexFile(sdist.name, f"../../files/{sdist.name}", sha256_of(sdist))]))
    (root / "simple" / "index.html").write_text(index.root_html(["fixture-ext"]))
    return f"{(root / 'simple').as_uri()}/"


@pytest.mark.parametrize("installer", ["pip-current", "uv"])
def test_a_project_also_on_pypi_still_comes_from_the_environment_root_or_not_at_all(
        fixture_builds: dict, served_builds: dict, pip_releases: dict, pypi_with_the_project: str, installer: str,
        tmp_path: Path) -> None:
    """The README's forms: uv with the root as --extra-index-url (uv asks it first and stops at the
    first index that has the project), pip with --only-binary for the project (pip reads its
    indexes as one, and would otherwise take the other index's sdist)."""
    for name, python, version in (("matching", make_venv(tmp_path / "matching"), wheel_version(fixture_builds["86"])),
                                  ("other", fake_torch_venv(tmp_path / "other"), None)):
        root = index_url(fixture_builds, python, "86", served_builds["url"])
        if installer == "uv":
            command = [str(Path(sys.executable).parent / "uv"), "pip", "install", "--no-cache", "--python", str(python),
                       "--default-index", pypi_with_the_project, "--extra-index-url", root, "fixture-ext"]
        else:
            command = [str(python), str(pip_releases["current"] / "pip"), "install", "--no-cache-dir",
                       "--only-binary", "fixture-ext", "--index-url", root, "--extra-index-url", pypi_with_the_project,
                       "fixture-ext"]
        result = subprocess.run(command, capture_output=True, text=True, env=installer_env(), timeout=600)
        assert (result.returncode == 0) is (version is not None), (name, result.stdout + result.stderr)
        assert installed_version(python, "fixture-ext") == version
        if version is None:
            assert re.search(FAILED[installer], result.stdout + result.stderr), result.stdout + result.stderr


def readme_install_lines() -> list[str]:
    """The README's copy-paste commands that install from builder's index (code lines, with their
    backslash continuations joined)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines()
            if line.startswith("    ") and re.search(r"\b(?:pip|uv pip) install\b", line)
            and ("builder index-url" in line or "cachehost" in line)]


def test_the_readme_install_lines_stop_when_builder_fails_and_refuse_sdists(
        pypi_with_the_project: str, tmp_path: Path) -> None:
    """Each example refuses the project's sdists (--only-binary), and one whose root comes from
    `builder index-url` runs pip only when that worked: a failing builder (here: a --python that is
    no interpreter) stops the line before pip, which would otherwise fall through to PyPI."""
    lines = readme_install_lines()
    assert len(lines) >= 4, lines
    for line in lines:
        assert "--only-binary" in line, line
        if "builder index-url" in line:
            assert line.startswith("ROOT=$(builder index-url") and ") && " in line and '"$ROOT"' in line, line
    bin_dir, pip_calls = tmp_path / "bin", tmp_path / "pip-calls.txt"
    bin_dir.mkdir()
    (bin_dir / "builder").write_text(f'#!/bin/sh\nexec {sys.executable} -m builder "$@" --python {tmp_path}/none\n')
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "pip $*" >> {pip_calls}\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    line = lines[0].replace("https://pypi.org/simple", pypi_with_the_project)
    ran = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**installer_env(), "PATH": f"{bin_dir}:{installer_env()['PATH']}"})
    assert ran.returncode != 0 and not pip_calls.exists(), ran.stdout + ran.stderr
    assert ran.stderr.startswith("error: ") and "Traceback" not in ran.stderr, ran.stderr
