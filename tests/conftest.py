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
import time
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

# What only `make toolchain-11.8` installs (Debian's CUDA 11.8 and the g++-11 nvcc 11.8 accepts): a
# test that needs it skips and names the target, so `make test` passes on a machine that never ran
# another target. Put here once, for every test file.
GXX_11 = shutil.which("g++-11")
DEBIAN_CUDA_11_8 = Path("/usr/bin/nvcc").is_file() and Path("/usr/include/cuda_runtime_api.h").is_file()
needs_gxx_11 = pytest.mark.skipif(GXX_11 is None, reason="needs g++-11 (nvcc 11.8 refuses g++ 12): make toolchain-11.8")
needs_cuda_11_8 = pytest.mark.skipif(not (DEBIAN_CUDA_11_8 and GXX_11),
                                     reason="needs Debian's CUDA 11.8 and g++-11: make toolchain-11.8")


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


def _installed_here() -> set[str]:
    import importlib.metadata

    return {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()}


@pytest.fixture(scope="session", autouse=True)
def interpreter_left_alone() -> Iterator[None]:
    """No test installs into the interpreter running the tests (builder's default target): a build
    there would be found by every later venv of make_venv() and decide what they install."""
    before = _installed_here()
    yield
    changed = _installed_here() ^ before
    assert not changed, f"a test changed what {sys.executable} has installed: {sorted(changed)}"


@pytest.fixture(scope="session", autouse=True)
def session_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build directory (BUILDER_BUILD_DIR) of every build the tests start, unless a test names
    its own: a folder of the session, so tests never meet this machine's /var/tmp/builder-build
    (a user's builds, or another test run's) and can look at what a build left there."""
    path = tmp_path_factory.mktemp("build-dir")
    os.environ["BUILDER_BUILD_DIR"] = str(path)
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


def wait_for(condition, what: str, seconds: float = 300):  # type: ignore[no-untyped-def]
    """`condition()`'s first true answer, polled every half second; the test fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"never happened: {what}")


def wrappers_on_path(directory: Path) -> tuple[dict[str, str], Path]:
    """A user's environment with `ccache` and `sccache` first on PATH that only note their call in
    the returned file and fail, and a SCCACHE_DIR of the user's: torch's cpp_extension would put
    either in front of every compile (`_wrap_compiler`) unless builder's plan says otherwise."""
    bin_dir, calls = directory / "wrappers", directory / "wrapper-calls.txt"
    bin_dir.mkdir(parents=True)
    for name in ("ccache", "sccache"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit 1\n')
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SCCACHE_DIR": str(directory / "user-sccache")}, calls


@pytest.fixture(scope="session")
def fixture_build(tmp_path_factory: pytest.TempPathFactory) -> FixtureBuild:
    """Built in a user's environment with compiler wrappers on PATH (`wrappers_on_path`), which
    test_build_fixture checks were never called."""
    root = tmp_path_factory.mktemp("fixture-build")
    recipe = write_recipe(root, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    venv = make_venv(root / "venv")
    cache, shared = root / "cache", root / "shared"
    env, _ = wrappers_on_path(root)
    result = builder_json("build", str(recipe), "--arch", "sm_86", "--python", str(venv), "--cache", str(cache),
                          "--cache-url", str(shared), env=env)
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


def fake_torch_venv(path: Path, version: str = "2.8.0+cu128", cuda: str = "12.8") -> Path:
    """A venv whose torch is a tiny stand-in: a torch/ module that answers builder's probe
    (version, CUDA, C++ ABI, no GPU) and a torch-<version>.dist-info folder that pip's and uv's
    resolvers see as an installed torch. Enough to stand for "another torch" without a 5 GB
    download; nothing in it can run a kernel."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    module = purelib / "torch"
    module.mkdir()
    (module / "__init__.py").write_text(textwrap.dedent(f"""\
        __version__ = "{version}"
        class version:
            cuda = "{cuda}"
        class _C:
            _GLIBCXX_USE_CXX11_ABI = True
        class cuda:
            @staticmethod
            def is_available():
                return False
        """))
    dist_info = purelib / f"torch-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (dist_info / "INSTALLER").write_text("tests\n")
    (dist_info / "RECORD").write_text("".join(f"{p.relative_to(purelib)},,\n" for p in
                                              [module / "__init__.py", *dist_info.iterdir()]) +
                                      f"{dist_info.name}/RECORD,,\n")
    return python


def installed_version(python: Path, project: str) -> str | None:
    """The version of `project` that `python` sees installed, None when none."""
    code = ("import importlib.metadata as m, sys\ntry: print(m.version(sys.argv[1]))\n"
            "except m.PackageNotFoundError: print('')")
    out = subprocess.run([python, "-c", code, project], capture_output=True, text=True, check=True).stdout.strip()
    return out or None


@pytest.fixture(scope="session")
def fixture_builds(tmp_path_factory: pytest.TempPathFactory, fixture_build: FixtureBuild) -> dict[str, Any]:
    """The fixture extension built for sm_86 and for sm_80 into one cache, against the running torch:
    {"cache": root, "86": build JSON, "80": build JSON}. The sm_86 entry is the session's
    `fixture_build` (a cache hit here), sm_80 a real build. Shared by every test of the session that
    needs real wheels of two archs."""
    root = tmp_path_factory.mktemp("builds")
    recipe = write_recipe(root, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    builds: dict[str, Any] = {"cache": fixture_build.copy_cache(root / "cache"), "recipe": recipe}
    for arch in ("86", "80"):
        builds[arch] = builder_json("build", str(recipe), "--arch", arch, "--no-install",
                                    "--cache", str(root / "cache"))
    return builds


@pytest.fixture(scope="session")
def pip_releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """pip 22.0.2 (Ubuntu 22.04's: the last that accepts only text/html pages) and the newest pip,
    each installed from PyPI into a folder of its own and run as `python <folder>/pip`, so it
    installs into whatever interpreter runs it."""
    root = tmp_path_factory.mktemp("pips")
    releases = {"22.0.2": root / "pip-22.0.2", "current": root / "pip-current"}
    for name, folder in releases.items():
        spec = f"pip=={name}" if name != "current" else "pip"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(folder), spec],
                       check=True, capture_output=True, timeout=600)
    return releases


@pytest.fixture(scope="session")
def pypi_substitute(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local stand-in for PyPI as the extra index: a PEP 503 file tree whose only project is a
    tiny torch 2.99.0 wheel, so an installer that wanted any torch would take it from here, and a
    test sees at once that it did (the target's torch would change)."""
    from builder.files import sha256_of
    from builder.store import index
    from builder.wheelfile import write_wheel

    root = tmp_path_factory.mktemp("pypi")
    wheel = root / "files" / "torch-2.99.0-py3-none-any.whl"
    with write_wheel(wheel, "torch-2.99.0.dist-info") as writer:
        writer.add_bytes("torch/__init__.py", b'__version__ = "2.99.0"\n')
        writer.add_bytes("torch-2.99.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: torch\nVersion: 2.99.0\n")
        writer.add_bytes("torch-2.99.0.dist-info/WHEEL",
                         b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    page = root / "simple" / "torch" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text(index.project_html([index.IndexFile(wheel.name, f"../../files/{wheel.name}", sha256_of(wheel))]))
    (root / "simple" / "index.html").write_text(index.root_html(["torch"]))
    return f"{(root / 'simple').as_uri()}/"


@contextmanager
def serving(cache: Any, log: Any = None) -> Iterator[str]:
    """builder's server (`make_server`) over `cache` (a Cache or its root) on 127.0.0.1, in a thread;
    yields its base URL. `log` gets one "METHOD path status" line per request."""
    import threading

    from builder.store.cache import Cache
    from builder.store.serve import make_server

    server = make_server(cache if isinstance(cache, Cache) else Cache(cache), "127.0.0.1", 0, log=log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@contextmanager
def cache_serve(*args: str) -> Iterator[str]:
    """`builder cache serve --port 0 ARGS` as a process; yields the /simple/ URL it says it serves."""
    process = subprocess.Popen([sys.executable, "-m", "builder", "cache", "serve", "--port", "0", *args],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "serving" in line, line + process.stderr.read()
        yield line.split(" at ")[1].split()[0]
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="session")
def served_builds(fixture_builds: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`serving` the fixture builds' cache: {"url": base URL, "requests": one "METHOD path status"
    line per request}."""
    requests: list[str] = []
    with serving(fixture_builds["cache"], log=requests.append) as url:
        yield {"url": url, "requests": requests}


def installer_env() -> dict[str, str]:
    """The environment for a pip or uv under test: no user or site configuration (this machine's
    pip.conf adds indexes, find-links and constraints), so only the indexes a test names count."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_NO_CONFIG": "1"}


def install_from(installer: str, python: Path, index_url: str, extra_index_url: str, requirement: str,
                 pip_releases: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """`pip install` (installer "pip-22.0.2" or "pip-current", run by the target interpreter) or
    `uv pip install --python` of `requirement` from `index_url` plus `extra_index_url`."""
    indexes = ["--index-url", index_url, "--extra-index-url", extra_index_url]
    if installer == "uv":
        command = [str(Path(sys.executable).parent / "uv"), "pip", "install", "--no-cache", "--python", str(python),
                   *indexes, requirement]
    else:
        pip = pip_releases[installer.removeprefix("pip-")] / "pip"
        command = [str(python), str(pip), "install", "--no-cache-dir", *indexes, requirement]
    return subprocess.run(command, capture_output=True, text=True, env=installer_env(), timeout=600)
