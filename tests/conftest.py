"""Shared test helpers: the real CLI in a subprocess, recipes over fixtures, fresh venvs."""

from __future__ import annotations

import functools
import json
import os
import site
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder.planning.labels import local_version_label

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
def fixture_recipe(tmp_path: Path) -> Path:
    """A recipe that builds tests/fixtures/torchext from the folder itself."""
    return write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')


def make_venv(path: Path) -> Path:
    """A fresh venv that sees this interpreter's site-packages (torch) through a .pth file,
    so it needs no 5 GB torch install of its own; packages installed into it stay its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "zz_parent_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def cache_sharing_envs(path: Path) -> Path:
    """A fresh cache whose build environments (cache/envs: a --torch venv is GBs from PyPI) are the
    checkout's own cache's (./cache/envs), made once and reused by later test runs."""
    shared = ROOT / "cache" / "envs"
    shared.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True)
    (path / "envs").symlink_to(shared)
    return path


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
