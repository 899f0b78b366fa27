"""Mirrors, as users configure them: pip's own configuration (PIP_CONFIG_FILE, `pip config set
global.index-url`), BUILDER_INDEX_URL over it, -i/--index-url over both for one command, URL
sources through url-mirrors, and the sha256 check guarding every download. Real servers on
127.0.0.1 (tests/index_servers.py): a static PEP 503 mirror answering text/html only, and a PEP 691
JSON index; `builder fetch` and `builder build` in subprocesses, as a user runs them."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from builder.errors import SourceError, ToolchainError
from builder.planning.venvs import pip_index_options
from builder.settings import load_settings
from builder.wheelfile import write_wheel
from tests.conftest import TORCHEXT, builder_json, run_builder, write_recipe
from tests.index_servers import Index, StaticMirror, sha256

FILE = "fixture_ext-0.1.0.tar.gz"
GITHUB = "https://github.com/builder-tests/fixture-ext/archive/refs/tags/v0.1.0.tar.gz"
INDEX_VARIABLES = ("BUILDER_INDEX_URL", "PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "BUILDER_URL_MIRRORS",
                   "PIP_EXTRA_INDEX_URL")
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@pytest.fixture(autouse=True)
def no_index_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own index variables would decide before pip's configuration does."""
    for variable in INDEX_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """tests/fixtures/torchext as an sdist-shaped fixture_ext-0.1.0.tar.gz (nothing compiles here)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(TORCHEXT.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and "build" not in path.parts:
                tar.add(path, f"fixture_ext-0.1.0/{path.relative_to(TORCHEXT).as_posix()}")
    return buffer.getvalue()


def pypi_recipe(directory: Path, sdist: bytes) -> Path:
    return write_recipe(directory, "fixture-ext",
                        f'{{ pypi = "fixture-ext", file = "{FILE}", sha256 = "{sha256(sdist)}" }}')


def pip_env(tmp_path: Path, index_url: str | None = None, **variables: str) -> dict[str, str]:
    """An environment whose pip configuration file (PIP_CONFIG_FILE, as `pip config set` writes one)
    sets `index-url`, and which has no builder config file."""
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {index_url}\n" if index_url else "")
    return {"PIP_CONFIG_FILE": str(conf), "BUILDER_CONFIG": os.devnull, **variables}


def one_error_line(stderr: str) -> str:
    """The error line of a failed command (and proof that it printed one, without a traceback)."""
    assert "Traceback" not in stderr, stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line.removeprefix("error: ")


def test_fetch_downloads_from_the_index_pip_is_configured_with(
        tmp_path: Path, static_mirror: StaticMirror, sdist: bytes) -> None:
    simple = static_mirror.publish("fixture-ext", FILE, sdist)
    recipe, cache = pypi_recipe(tmp_path, sdist), tmp_path / "cache"
    env = pip_env(tmp_path, simple)
    fetched = builder_json("fetch", str(recipe), "--cache", str(cache), env=env)
    stored = cache / "sources" / FILE
    assert fetched == {"0.1.0": str(stored)}
    assert stored.read_bytes() == sdist and os.listdir(cache / "sources") == [FILE]
    assert static_mirror.paths() == ["/simple/fixture-ext/", f"/packages/{FILE}"]
    accept = static_mirror.requests[0][1] or ""
    assert accept.startswith(JSON_TYPE)  # asked for PEP 691 JSON, as pip does, and read the HTML it got
    again = builder_json("fetch", str(recipe), "--cache", str(cache), env=env)
    assert again == fetched and len(static_mirror.requests) == 2  # checked on disk, not fetched again


def test_builder_index_url_overrides_pip_and_the_command_line_overrides_both(
        tmp_path: Path, static_mirror: StaticMirror, index: Index, sdist: bytes) -> None:
    from_pip = static_mirror.publish("fixture-ext", FILE, sdist)
    for_this_command = static_mirror.publish("fixture-ext", FILE, sdist, simple="other/simple")
    index.publish("fixture-ext", FILE, sdist, listed=sha256(sdist))
    recipe = pypi_recipe(tmp_path, sdist)
    env = pip_env(tmp_path, from_pip, BUILDER_INDEX_URL=f"{index.base}/simple")

    builder_json("fetch", str(recipe), "--cache", str(tmp_path / "c1"), env=env)
    assert index.paths() == ["/simple/fixture-ext/", f"/files/{FILE}"] and static_mirror.requests == []
    for option in ("-i", "--index-url"):
        builder_json("fetch", str(recipe), option, for_this_command, "--cache", str(tmp_path / option), env=env)
    assert static_mirror.paths() == ["/other/simple/fixture-ext/", f"/packages/{FILE}"] * 2
    assert len(index.requests) == 2

    rows = {row["name"]: row for row in builder_json("config", env=env)["settings"]}  # -i was for one command
    assert rows["index-url"]["value"] == f"{index.base}/simple"
    assert rows["index-url"]["origin"] == "environment variable BUILDER_INDEX_URL"


def test_a_mirror_serving_another_file_is_refused_and_nothing_is_stored(
        tmp_path: Path, static_mirror: StaticMirror, sdist: bytes) -> None:
    recipe, cache = pypi_recipe(tmp_path, sdist), tmp_path / "cache"
    tampered = sdist + b"\0"
    simple = static_mirror.publish("fixture-ext", FILE, tampered, listed=sha256(sdist))  # its page vouches for it
    result = run_builder("fetch", str(recipe), "--cache", str(cache), env=pip_env(tmp_path, simple))
    assert result.returncode == SourceError.exit_code
    assert one_error_line(result.stderr) == (f"sha256 mismatch for {static_mirror.base}/packages/{FILE}: "
                                             f"expected {sha256(sdist)}, got {sha256(tampered)}")
    assert f"hint: the index {simple} served it" in result.stderr
    assert os.listdir(cache / "sources") == []  # not even a partial download

    lying = static_mirror.publish("fixture-ext", FILE, tampered, listed=sha256(tampered), simple="lying/simple")
    result = run_builder("fetch", str(recipe), "-i", lying, "--cache", str(cache), env=pip_env(tmp_path))
    assert result.returncode == SourceError.exit_code
    assert one_error_line(result.stderr) == (f"{lying}/fixture-ext/ lists sha256 {sha256(tampered)} for {FILE}, "
                                             f"but the recipe expects {sha256(sdist)}")
    assert static_mirror.paths()[-1] == "/lying/simple/fixture-ext/"  # refused before downloading
    assert os.listdir(cache / "sources") == []


def test_url_sources_go_through_the_url_mirrors(tmp_path: Path, static_mirror: StaticMirror, sdist: bytes) -> None:
    path = "gh/builder-tests/fixture-ext/archive/refs/tags/v0.1.0.tar.gz"
    mirrored = static_mirror.put(path, sdist)
    recipe = write_recipe(tmp_path, "fixture-ext", f'{{ url = "{GITHUB}", sha256 = "{sha256(sdist)}" }}')
    rewrite = f"https://github.com/={static_mirror.base}/gh/"
    fetched = builder_json("fetch", str(recipe), "--cache", str(tmp_path / "c1"),
                           env=pip_env(tmp_path, BUILDER_URL_MIRRORS=rewrite))
    stored = tmp_path / "c1" / "sources" / "v0.1.0.tar.gz"  # named after the recipe's URL, not the mirror's
    assert fetched == {"0.1.0": str(stored)} and stored.read_bytes() == sdist
    assert static_mirror.paths() == [f"/{path}"]

    static_mirror.put(path, sdist + b"\0")  # the same mirror from the config file, now serving another file
    config = tmp_path / "config.toml"
    config.write_text(f'url-mirrors = {{ "https://github.com/" = "{static_mirror.base}/gh/" }}\n')
    result = run_builder("fetch", str(recipe), "--cache", str(tmp_path / "c2"),
                         env=pip_env(tmp_path, BUILDER_CONFIG=str(config)))
    assert result.returncode == SourceError.exit_code
    assert one_error_line(result.stderr).startswith(f"sha256 mismatch for {mirrored}: expected {sha256(sdist)}")
    assert f"hint: the url-mirrors setting sent {GITHUB} to {mirrored}" in result.stderr
    assert os.listdir(tmp_path / "c2" / "sources") == []


def test_builder_config_shows_the_index_in_effect_and_where_it_came_from(tmp_path: Path) -> None:
    env = pip_env(tmp_path, "http://127.0.0.1:9/simple", COLUMNS="200")
    rows = {row["name"]: row for row in builder_json("config", env=env)["settings"]}
    assert rows["index-url"]["value"] == "http://127.0.0.1:9/simple"
    assert rows["index-url"]["origin"] == f"pip's configuration ({tmp_path / 'pip.conf'}, [global])"
    shown = run_builder("config", env=env).stdout
    assert "http://127.0.0.1:9/simple" in shown and "pip's configuration" in shown

    rows = {row["name"]: row for row in builder_json("config", env={**env, "PIP_CONFIG_FILE": os.devnull})["settings"]}
    assert rows["index-url"]["value"] == "https://pypi.org/simple" and rows["index-url"]["origin"] == "default"


def test_pip_reads_a_commands_own_section_over_global_in_any_spelling(tmp_path: Path) -> None:
    (tmp_path / "pip.conf").write_text(textwrap.dedent("""\
        [global]
        index-url = http://127.0.0.1:9/global/simple
        [install]
        index_url = http://127.0.0.1:9/install/simple
        """))
    environ = {**os.environ, "PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), "BUILDER_CONFIG": os.devnull}
    settings = load_settings(environ=environ)
    assert settings.source_index == "http://127.0.0.1:9/install/simple"
    [row] = [row for row in settings.describe() if row["name"] == "index-url"]
    assert row["origin"] == f"pip's configuration ({tmp_path / 'pip.conf'}, [install])"
    assert load_settings(environ={**environ, "PIP_INDEX_URL": "http://127.0.0.1:9/env/simple"}).source_index \
        == "http://127.0.0.1:9/env/simple"


# --- build environments (--torch) ----------------------------------------------------------


def tiny_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel holding a module of its name (a stand-in for torch or a build requirement)."""
    info = f"{name}-{version}.dist-info"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    with write_wheel(path, info) as wheel:
        wheel.add_bytes(f"{name}/__init__.py", f"__version__ = {version!r}\n".encode())
        wheel.add_bytes(f"{info}/METADATA", metadata.encode())
        wheel.add_bytes(f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                         b"Tag: py3-none-any\n")
    return path


def test_pip_index_options_of_a_build_env() -> None:
    assert pip_index_options(None, "http://m/simple") == ["--index-url", "http://m/simple"]
    assert pip_index_options("http://t/whl/cu130", "http://m/simple") == [
        "--index-url", "http://t/whl/cu130", "--extra-index-url", "http://m/simple"]


def test_a_torch_build_env_takes_torch_from_its_index_and_the_rest_from_pips_configuration(
        tmp_path: Path, static_mirror: StaticMirror) -> None:
    """`--torch V --torch-index URL`: torch from URL; torch's own dependencies from the index pip is
    configured with (once PyPI itself, hard-coded); the recipe's build requirements through the rest
    of the user's pip configuration (here an extra index)."""
    wheels = tmp_path / "wheels"
    torch_index = static_mirror.publish("torch", "torch-0.0.1-py3-none-any.whl",
                                        tiny_wheel(wheels, "torch", "0.0.1", ("tinydep",)).read_bytes(),
                                        simple="torch-index/simple")
    mirror = static_mirror.publish("tinydep", "tinydep-1.0-py3-none-any.whl",
                                   tiny_wheel(wheels, "tinydep", "1.0").read_bytes())
    extra = static_mirror.publish("builddep", "builddep-1.0-py3-none-any.whl",
                                  tiny_wheel(wheels, "builddep", "1.0").read_bytes(), simple="extra/simple")
    (tmp_path / "pip.conf").write_text(f"[global]\nindex-url = {mirror}\nextra-index-url = {extra}\n")
    recipe = tmp_path / "fixture-ext.toml"
    recipe.write_text(textwrap.dedent(f"""\
        name = "fixture-ext"
        backend = "torch-ext"
        default_version = "0.1.0"
        [versions."0.1.0"]
        source = {{ path = "{TORCHEXT}" }}
        [build]
        job_memory_gb = 1
        requirements = ["builddep"]
        """))
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--torch", "0.0.1", "--torch-index", torch_index, "--arch", "86",
                         "--no-install", "--cache", str(cache),
                         env={"PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), "BUILDER_CONFIG": os.devnull})
    log = (cache / "logs" / "env-torch-0.0.1.log").read_text()
    assert f"pip install torch==0.0.1 --index-url {torch_index} --extra-index-url {mirror}\n" in log
    assert "pypi.org" not in log
    [env_dir] = [p for p in (cache / "envs").iterdir() if p.is_dir()]
    freeze = subprocess.run([env_dir / "bin" / "python", "-m", "pip", "freeze"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert {"torch==0.0.1", "tinydep==1.0", "builddep==1.0"} <= set(freeze), freeze
    assert {"/torch-index/simple/torch/", "/simple/tinydep/", "/extra/simple/builddep/"} <= set(static_mirror.paths())
    # the stand-in torch has no CUDA: the plan, made in the env, refuses it in one line
    assert result.returncode == ToolchainError.exit_code
    assert one_error_line(result.stderr).endswith("cannot build CUDA extensions: torch 0.0.1 is a CPU-only build")
