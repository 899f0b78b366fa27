"""builder as users install it: the wheel and the sdist `python -m build` makes, installed by pip
(not editable), by `uv tool install` and by `pipx install`, each run from outside the checkout.

The wheel and sdist are built once per session. A pip install goes into a venv from make_venv(),
which sees this interpreter's torch (and builder's dependencies) through a .pth line but not the
checkout's editable builder; every check first asserts that the builder imported there is the
installed one. uv and pipx make their own environments and fetch builder's dependencies from the
index, so they prove the wheel's metadata too. Every installed run gets a config and cache
directory of its own and none of this session's BUILDER_* variables.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, builder_json, make_venv, running_torch_version

SHIPPED_FOLDERS = ("recipes", "patches")
UV = Path(sys.executable).parent / "uv"


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path
    log: str


@dataclass(frozen=True)
class Install:
    """An installed builder: the environment it lives in and its `builder` command."""

    env: Path
    command: Path

    def run(self, *args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The installed `builder ARGS`, run in `home` (outside the checkout) as a user would."""
        home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([str(self.command), *args], capture_output=True, text=True, cwd=home,
                                env={**user_env(home), **(env or {})}, timeout=600)
        assert result.returncode == 0, f"builder {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def json(self, *args: str, home: Path, env: dict[str, str] | None = None) -> Any:
        return json.loads(self.run(*args, "--json", home=home, env=env).stdout)

    def imported_package(self, home: Path) -> Path:
        """The folder of the builder package this install's Python imports, from `home`."""
        result = subprocess.run([str(self.env / "bin" / "python"), "-c", "import builder; print(builder.__file__)"],
                                capture_output=True, text=True, cwd=home, env=user_env(home), check=True)
        return Path(result.stdout.strip()).parent


def user_env(home: Path) -> dict[str, str]:
    """This environment without builder's settings or PYTHONPATH, with a config and cache dir in `home`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("BUILDER_") and k != "PYTHONPATH"}
    return {**kept, "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}


def shipped_files(folder: Path) -> set[str]:
    """The files of a recipes or patches folder, relative to it (bytecode left out)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def shipped_recipe_names() -> set[str]:
    return {path.stem for path in (ROOT / "recipes").glob("*.toml")}


def check_install(install: Install, home: Path) -> Path:
    """Assert that `install`'s builder is the installed one and holds every shipped file; its package folder."""
    package = install.imported_package(home)
    assert package.is_relative_to(install.env), f"{package} is not the installed builder"
    for kind in SHIPPED_FOLDERS:
        assert shipped_files(package / kind) == shipped_files(ROOT / kind), kind
    return package


def check_recipes_listed(install: Install, home: Path, package: Path) -> None:
    """`builder recipes --json` of `install` lists every shipped recipe, from its own package."""
    recipes = install.json("recipes", home=home)
    assert {r["name"] for r in recipes} == shipped_recipe_names()
    assert {r["origin"] for r in recipes} == {"shipped"}
    assert {Path(r["path"]).parent for r in recipes} == {package / "recipes"}


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist and the wheel (built from that sdist) of `python -m build`, once per session."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return Dist(wheel, sdist, log)


def pip_install(tmp_path_factory: pytest.TempPathFactory, name: str, artifact: Path) -> Install:
    """`artifact` pip-installed (not editable) into a fresh venv that sees this torch."""
    python = make_venv(tmp_path_factory.mktemp(name) / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(artifact)], check=True, capture_output=True,
                   text=True, cwd=python.parent, timeout=900)
    return Install(python.parent.parent, python.parent / "builder")


@pytest.fixture(scope="session")
def wheel_install(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Install:
    return pip_install(tmp_path_factory, "wheel-install", dist.wheel)


@pytest.fixture(scope="session")
def sdist_install(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Install:
    return pip_install(tmp_path_factory, "sdist-install", dist.sdist)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A folder outside the checkout to run the installed builder in."""
    folder = tmp_path / "home"
    folder.mkdir()
    assert not folder.is_relative_to(ROOT)
    return folder


def test_every_package_folder_is_in_the_package_list() -> None:
    """A new subpackage of builder/ cannot be left out of the wheel: pyproject.toml lists them all."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(d.relative_to(ROOT).parts) for d in [ROOT / "builder", *(ROOT / "builder").rglob("*")]
               if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}
    mapped = config["package-dir"]
    assert set(config["packages"]) == folders | set(mapped)
    assert all((ROOT / folder / "__init__.py").is_file() for folder in mapped.values())


def test_the_build_leaves_nothing_ambiguous(dist: Dist) -> None:
    """setuptools finds no folder that Python could import but the package list leaves out."""
    assert "would be ignored" not in dist.log
    assert dist.wheel.name == "builder-0.1.0-py3-none-any.whl"


def test_the_wheel_and_sdist_hold_every_recipe_and_patch(dist: Dist) -> None:
    in_wheel = set(zipfile.ZipFile(dist.wheel).namelist())
    with tarfile.open(dist.sdist) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for kind in SHIPPED_FOLDERS:
        files = shipped_files(ROOT / kind)
        assert files and {f"builder/{kind}/{f}" for f in files} <= in_wheel
        assert {f"{kind}/{f}" for f in files} <= in_sdist
    assert {"builder/py.typed", "builder/patches/bitsandbytes/0.41-cuda13.patch",
            "builder/recipes/checks/chatglm_int4.py"} <= in_wheel


def test_the_installed_wheel_lists_every_recipe(wheel_install: Install, home: Path) -> None:
    package = check_install(wheel_install, home)
    check_recipes_listed(wheel_install, home, package)


def test_the_installed_wheel_plans_flash_attn(wheel_install: Install, home: Path) -> None:
    """Its plan reads the installed patches and keys the build as the checkout does (one shared cache serves both)."""
    check_install(wheel_install, home)
    plan = wheel_install.json("plan", "flash-attn", "--arch", "86", home=home)
    assert plan["target"]["torch"] == running_torch_version()
    assert plan["target"]["python"] == str(wheel_install.env / "bin" / "python")
    assert plan["patches"] and plan["archs"] == ["86"]
    assert plan["cache_key"] == builder_json("plan", "flash-attn", "--arch", "86")["cache_key"]


def test_the_installed_sdist_lists_every_recipe(sdist_install: Install, home: Path) -> None:
    package = check_install(sdist_install, home)
    check_recipes_listed(sdist_install, home, package)


def test_uv_tool_install(dist: Dist, tmp_path: Path, home: Path) -> None:
    """`uv tool install WHEEL`; uv fetches builder's dependencies from the index."""
    tools, bin_dir = tmp_path / "uv-tools", tmp_path / "uv-bin"
    env = {**os.environ, "UV_TOOL_DIR": str(tools), "UV_TOOL_BIN_DIR": str(bin_dir)}
    subprocess.run([str(UV), "tool", "install", "--python", sys.executable, str(dist.wheel)], check=True,
                   capture_output=True, text=True, env=env, cwd=home, timeout=900)
    install = Install(tools / "builder", bin_dir / "builder")
    check_recipes_listed(install, home, check_install(install, home))


def test_pipx_install(dist: Dist, tmp_path: Path, home: Path) -> None:
    """`pipx install WHEEL`, pipx itself installed from the index into a throwaway venv."""
    pipx_venv = tmp_path / "pipx-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(pipx_venv)], check=True)
    subprocess.run([str(UV), "pip", "install", "-q", "--python", str(pipx_venv / "bin" / "python"), "pipx"],
                   check=True, capture_output=True, text=True, timeout=900)
    pipx_home, bin_dir = tmp_path / "pipx-home", tmp_path / "pipx-bin"
    env = {**os.environ, "PIPX_HOME": str(pipx_home), "PIPX_BIN_DIR": str(bin_dir),
           "PIPX_MAN_DIR": str(tmp_path / "pipx-man")}
    subprocess.run([str(pipx_venv / "bin" / "pipx"), "install", "--python", sys.executable, str(dist.wheel)],
                   check=True, capture_output=True, text=True, env=env, cwd=home, timeout=900)
    install = Install(pipx_home / "venvs" / "builder", bin_dir / "builder")
    check_recipes_listed(install, home, check_install(install, home))


def test_a_user_recipe_wins_over_the_shipped_one(wheel_install: Install, tmp_path: Path, home: Path) -> None:
    """BUILDER_RECIPE_PATH, a path list: its first folder that has a name wins, then the shipped recipes."""
    first, second = tmp_path / "my-recipes", tmp_path / "team-recipes"
    first.mkdir()
    second.mkdir()
    shipped = (ROOT / "recipes" / "causal-conv1d.toml").read_text()
    for folder in (first, second):
        (folder / "causal-conv1d.toml").write_text(
            re.sub(r'(?m)^description = ".*"$', f'description = "from {folder.name}"', shipped))
    fixture = (ROOT / "tests" / "fixtures" / "torchext" / "fixture-ext.toml").read_text()
    (second / "team-ext.toml").write_text(fixture.replace('name = "fixture-ext"', 'name = "team-ext"'))

    recipes = {r["name"]: r for r in wheel_install.json(
        "recipes", home=home, env={"BUILDER_RECIPE_PATH": os.pathsep.join(map(str, (first, second)))})}
    assert set(recipes) == shipped_recipe_names() | {"team-ext"}
    assert recipes["causal-conv1d"]["description"] == "from my-recipes"
    assert Path(recipes["causal-conv1d"]["origin"]) == first
    assert Path(recipes["team-ext"]["origin"]) == second
    assert {r["origin"] for name, r in recipes.items() if name not in ("causal-conv1d", "team-ext")} == {"shipped"}
