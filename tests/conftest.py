"""Shared test helpers: the real CLI in a subprocess, recipes over fixtures, fresh venvs."""

from __future__ import annotations

import functools
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.planning.labels import local_version_label
from tests.index_servers import Index, StaticMirror

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TORCHEXT = FIXTURES / "torchext"


@functools.cache
def _running_torch() -> tuple[str, str, bool]:
    """(torch version, its CUDA, its C++ ABI) of the interpreter running the tests."""
    import torch

    return torch.__version__, str(torch.version.cuda), bool(torch._C._GLIBCXX_USE_CXX11_ABI)


def running_torch_version() -> str:
    """The running torch's version as torch reports it ("2.14.1+cu130")."""
    return _running_torch()[0]


def running_torch_release() -> str:
    """The running torch's release, without its local label ("2.14.1")."""
    return running_torch_version().split("+")[0]


def running_torch_cuda() -> str:
    """The CUDA the running torch is built for ("13.0"); the tests build with a toolkit of it."""
    return _running_torch()[1]


def label(*archs: str, variants: tuple[str, ...] = ()) -> str:
    """The local version a build against the running torch (and a toolkit of torch's CUDA) gets:
    derived, never hard-coded, so the tests hold for whatever torch the machine has."""
    torch, cuda, abi = _running_torch()
    return local_version_label(cuda=cuda, torch=torch, cxx11_abi=abi, archs=list(archs), variants=variants)


def run_builder(*args: str, env: dict[str, str] | None = None, check: bool = False,
                timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """`python -m builder ARGS` in a subprocess, as a user would run it."""
    result = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"builder {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def builder_json(*args: str, env: dict[str, str] | None = None) -> dict:
    result = run_builder(*args, "--json", env=env, check=True)
    return json.loads(result.stdout)


def write_recipe(directory: Path, name: str, source: str, *, extra: str = "",
                 verify: str = 'imports = ["fixture_ext_cuda", "fixture_ext"]\n'
                               'extensions = ["fixture_ext_cuda"]') -> Path:
    """A recipe TOML in `directory`; `source` is the inline table of its only version."""
    path = directory / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""\
        name = "{name}"
        backend = "torch-ext"
        default_version = "0.1.0"
        [versions."0.1.0"]
        source = {source}
        [build]
        job_memory_gb = 1
        requirements = ["setuptools", "wheel", "ninja"]
        [deps]
        drop = ["torch"]
        [verify]
        {verify}
        """) + extra)
    return path


@pytest.fixture
def index() -> Iterator[Index]:
    """A PEP 691 JSON index on 127.0.0.1 (tests/index_servers.py)."""
    with Index().running() as served:
        yield served


@pytest.fixture
def static_mirror(tmp_path: Path) -> Iterator[StaticMirror]:
    """A static PEP 503 mirror (a folder behind http.server) on 127.0.0.1 (tests/index_servers.py)."""
    with StaticMirror(root=tmp_path / "mirror").running() as served:
        yield served


@pytest.fixture
def fixture_recipe(tmp_path: Path) -> Path:
    """A recipe that builds tests/fixtures/torchext from the folder itself."""
    return write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')


@dataclass(frozen=True)
class FixtureBuild:
    """The session's one real build of tests/fixtures/torchext for sm_86 (the `fixture_recipe`):
    compiled, stored in `cache`, installed into the fresh venv `venv`, verified, and uploaded to the
    shared cache directory `shared`. A CUDA build takes minutes here, so tests that need this entry
    share it: they read these folders, and a test that writes into a cache takes a copy of it
    (`copy_cache`). Tests about building itself (killed, concurrent, failing builds) still build."""

    root: Path
    recipe: Path
    cache: Path
    shared: Path
    venv: Path
    result: dict[str, Any]
    """`builder build --json` of the build."""

    def copy_cache(self, dest: Path) -> Path:
        """A cache of one's own holding the entry (its files copied, without locks or work dirs)."""
        shutil.copytree(self.cache, dest, ignore=shutil.ignore_patterns("locks", "build", "staging"))
        return dest


@pytest.fixture(scope="session")
def fixture_build(tmp_path_factory: pytest.TempPathFactory) -> FixtureBuild:
    root = tmp_path_factory.mktemp("fixture-build")
    recipe = write_recipe(root, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    venv = make_venv(root / "venv")
    cache, shared = root / "cache", root / "shared"
    result = builder_json("build", str(recipe), "--arch", "sm_86", "--python", str(venv), "--cache", str(cache),
                          "--cache-url", str(shared))
    return FixtureBuild(root, recipe, cache, shared, venv, result)


def make_venv(path: Path) -> Path:
    """A fresh venv that sees this interpreter's site-packages (torch) through a .pth file,
    so it needs no 5 GB torch install of its own; packages installed into it stay its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "zz_parent_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.fixture
def fresh_venv(tmp_path: Path) -> Path:
    return make_venv(tmp_path / "venv")


@contextmanager
def read_only_dir(directory: Path) -> Iterator[Path]:
    """`directory` on a read-only bind mount (root ignores permission bits), else chmod 555."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount as root here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], check=True, capture_output=True)
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@contextmanager
def small_tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """`directory` on a tmpfs of `size` (a disk that fills up for real); skips where mounting is
    not allowed (not root, or no mount namespace rights)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)
