"""Targets without pip (a venv made by `uv venv`): builder builds in them with `uv build` and installs
into them with `uv pip install`, with the key a pip target of the same torch gets; where no uv can be
had either, one line names the fix before anything compiles.

The targets are real `uv venv`s that see the test interpreter's packages (torch, setuptools, ninja)
through a .pth file naming a folder of links to them, pip and uv left out: the interpreter's own
site-packages cannot be named, since pip is in it.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.errors import EnvironmentSetupError
from builder.planning.frontend import MIN_UV, Frontend, builders_uv, choose_frontend, has_pip, recorded_frontend
from tests.conftest import ROOT, FixtureBuild, builder_json, installed_version, installer_env, run_builder

LEFT_OUT = ("pip", "uv")
"""The projects the links leave out: the targets have no pip, and the builder without uv no uv."""


def _left_out(name: str) -> bool:
    project = name.split("-")[0].lower() if name.endswith((".dist-info", ".egg-info")) else name
    return project in LEFT_OUT or name.endswith(".pth") or name.startswith("__editable__")


@pytest.fixture(scope="module")
def packages_without_pip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of links to everything the test interpreter has installed but pip and uv."""
    folder = tmp_path_factory.mktemp("packages-without-pip")
    for site_dir in map(Path, site.getsitepackages()):
        for entry in site_dir.iterdir():
            if not _left_out(entry.name) and not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)
    return folder


def uv() -> str:
    found = builders_uv()
    assert found is not None, "uv is a test extra: `pip install -e '.[test]'`"
    return found


def purelib(python: Path) -> Path:
    return Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())


def uv_venv(path: Path, packages: Path | None) -> Path:
    """`uv venv` (no pip in it) of this interpreter's Python, seeing `packages` when given."""
    subprocess.run([uv(), "venv", "--no-config", "--python", sys.executable, str(path)], check=True,
                   capture_output=True, env=installer_env())
    python = path / "bin" / "python"
    if packages is not None:
        (purelib(python) / "zz_packages.pth").write_text(f"{packages}\n")
    assert not has_pip(python)
    return python


def path_without_uv() -> str:
    """This PATH without the folders that hold a uv."""
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not (Path(d) / "uv").exists())


def test_a_pip_target_keeps_pip_and_its_command(fixture_build: FixtureBuild) -> None:
    """What a target with pip gets is what it always got: `python -m pip wheel`, and the key."""
    plan = fixture_build.result["plan"]
    assert plan["build_env"]["frontend"] == "pip" and "uv" not in plan["build_env"]
    python = Path(plan["target"]["python"])
    assert recorded_frontend(plan["build_env"], python).wheel_command(Path("s"), Path("o")) == [
        str(python), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-v", "-w", "o", "s"]
    assert recorded_frontend({}, python) == Frontend(python)  # a plan that names no frontend: pip


def test_a_cache_hit_installs_into_a_uv_venv_with_uv(fixture_build: FixtureBuild, packages_without_pip: Path,
                                                     tmp_path: Path) -> None:
    target = uv_venv(tmp_path / "uv-venv", packages_without_pip)
    cache = fixture_build.copy_cache(tmp_path / "cache")
    env = {"UV_CACHE_DIR": str(tmp_path / "uv-cache")}
    planned = builder_json("plan", str(fixture_build.recipe), "--arch", "sm_86", "--python", str(target),
                           "--cache", str(cache), env=env)
    assert planned["cache_key"] == fixture_build.result["cache_key"]  # the frontend is not in the key
    assert planned["cache_hit"] is True
    assert planned["build_env"]["frontend"] == "uv" and planned["build_env"]["uv"] == uv()
    assert planned["commands"][0][:4] == [uv(), "build", "--wheel", "--no-build-isolation"]
    assert any("has no pip: uv" in note for note in planned["notes"])

    built = run_builder("build", str(fixture_build.recipe), "--arch", "sm_86", "--python", str(target),
                        "--cache", str(cache), env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"install into {target} with uv ({uv()}): it has no pip" in built.stdout + built.stderr
    assert "cache hit" in built.stdout + built.stderr
    assert f'installed into {target}; verified: {{"imports": ["fixture_ext_cuda", "fixture_ext"], ' \
           '"cubins": {"fixture_ext_cuda": ["86"]}' in built.stdout
    assert installed_version(target, "fixture-ext") == Path(fixture_build.result["wheel"]).name.split("-")[1]
    log = (cache / "logs" / "install.log").read_text()
    assert f"+ {uv()} pip install --python {target} --no-deps --reinstall --no-index" in log

    # `builder install` of the entry into another uv venv
    other = uv_venv(tmp_path / "other-uv-venv", packages_without_pip)
    installed = builder_json("install", fixture_build.result["cache_key"], "--python", str(other),
                             "--cache", str(cache), env=env)
    assert installed["python"] == str(other)
    assert installed_version(other, "fixture-ext") == installed_version(target, "fixture-ext")


def test_a_fresh_build_in_a_uv_venv_runs_uv_build(fixture_build: FixtureBuild, packages_without_pip: Path,
                                                  tmp_path: Path) -> None:
    """A compile with `uv build --wheel --no-build-isolation` in the target. Its wheel is the pip
    build's but for the .so, which holds torch's header paths (__FILE__ in torch's checks), and this
    target's torch is reached through other paths than the session build's; built with pip in a
    target reaching torch through the same paths, the wheel is byte-identical."""
    target = uv_venv(tmp_path / "uv-venv", packages_without_pip)
    cache = tmp_path / "cache"
    result = builder_json("build", str(fixture_build.recipe), "--arch", "sm_86", "--python", str(target),
                          "--cache", str(cache), env={"UV_CACHE_DIR": str(tmp_path / "uv-cache")})
    assert result["cache_hit"] is False and result["installed_into"] == str(target)
    assert result["cache_key"] == fixture_build.result["cache_key"]
    assert result["plan"]["build_env"]["frontend"] == "uv"
    assert result["verified"]["cubins"] == {"fixture_ext_cuda": ["86"]}
    log = Path(result["log"]).read_text()
    assert f"+ {uv()} build --wheel --no-build-isolation --no-config --offline --python {target} " in log
    assert " -m pip " not in log
    with zipfile.ZipFile(result["wheel"]) as ours, zipfile.ZipFile(fixture_build.result["wheel"]) as pips:
        assert ours.namelist() == pips.namelist()
        for name in ours.namelist():
            if not name.endswith((".so", "RECORD")):
                assert ours.read(name) == pips.read(name), name
    subprocess.run([target, "-c", "import torch, fixture_ext; assert fixture_ext.vec_add.__doc__"], check=True)


def test_no_pip_and_no_uv_is_one_line_before_anything_compiles(packages_without_pip: Path,
                                                               fixture_build: FixtureBuild, tmp_path: Path) -> None:
    """builder installed without uv (an environment of its own: builder and its dependencies, no uv),
    a PATH without uv, a `uv venv` target: `plan`, `build` and `install` refuse with the fix."""
    target = uv_venv(tmp_path / "uv-venv", packages_without_pip)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "builder-env")], check=True)
    builder_python = tmp_path / "builder-env" / "bin" / "python"
    (purelib(builder_python) / "zz_packages.pth").write_text(f"{packages_without_pip}\n{ROOT}\n")
    env = {**os.environ, "PATH": path_without_uv()}
    assert shutil.which("uv", path=env["PATH"]) is None
    probe = "import builder.planning.frontend as f, importlib.util as u; print(f.builders_uv(), u.find_spec('uv'))"
    assert subprocess.run([builder_python, "-c", probe], capture_output=True, text=True, check=True,
                          cwd=tmp_path).stdout.split() == ["None", "None"]

    cache = tmp_path / "cache"
    for command in (["plan", str(fixture_build.recipe), "--arch", "86"],
                    ["build", str(fixture_build.recipe), "--arch", "86"],
                    ["install", fixture_build.result["wheel"]]):
        result = subprocess.run([builder_python, "-m", "builder", *command, "--python", str(target), "--cache",
                                 str(cache)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        assert result.returncode == EnvironmentSetupError.exit_code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert f"the target python {target} has no pip, and no uv was found" in result.stderr
        assert f"uv pip install --python {target} pip" in result.stderr  # the fix
    assert not list(cache.glob("logs/fixture-ext-*.log"))  # nothing was built
    assert installed_version(target, "fixture-ext") is None


def test_the_frontend_of_a_real_interpreter_without_pip(tmp_path: Path) -> None:
    bare = uv_venv(tmp_path / "bare", None)
    with pytest.raises(EnvironmentSetupError) as refused:
        choose_frontend(bare, path=str(tmp_path / "empty"), own_uv=lambda: None)
    assert "has no pip, and no uv was found" in refused.value.message
    assert f"{bare} -m ensurepip" in (refused.value.hint or "")

    assert choose_frontend(bare, path=str(tmp_path / "empty")) == Frontend(bare, uv())  # builder's own
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "uv").symlink_to(uv())
    assert choose_frontend(bare, path=str(on_path), own_uv=lambda: None) == Frontend(bare, str(on_path / "uv"))

    old = tmp_path / "old" / "uv"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'uv 0.4.30 (d0a6c8f2a 2024-11-05)'\n")
    old.chmod(0o755)
    with pytest.raises(EnvironmentSetupError) as too_old:
        choose_frontend(bare, path=None, own_uv=lambda: str(old))
    assert f"version 0.4.30) is older than {MIN_UV}" in too_old.value.message

    assert choose_frontend(Path(sys.executable), path=None) == Frontend(Path(sys.executable))  # has pip
