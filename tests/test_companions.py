"""A recipe whose requirement builder satisfies with its own build of another recipe, as autoawq's
autoawq-kernels: fixture-app (pure Python) needs fixture-ext (the torch extension fixture)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tests.conftest import FIXTURES, TORCHEXT, FixtureBuild, builder_json, label, make_venv, run_builder, write_recipe

PINNED = f"0.1.0+{label('86')}"


def app_recipe(directory: Path) -> Path:
    write_recipe(directory, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    path = directory / "fixture-app.toml"
    path.write_text(textwrap.dedent(f"""\
        name = "fixture-app"
        backend = "torch-ext"
        default_version = "0.1.0"
        [versions."0.1.0"]
        source = {{ path = "{FIXTURES / 'withcompanion'}" }}
        [build]
        kernels = false
        job_memory_gb = 1
        requirements = ["setuptools", "wheel"]
        [deps]
        drop = ["torch"]
        companions = ["fixture-ext"]
        [verify]
        imports = ["fixture_app"]
        """))
    return path


def requires(python: Path, dist: str) -> list[str]:
    code = f"import importlib.metadata as m; print('\\n'.join(m.requires({dist!r}) or []))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")


def installed_version(python: Path, dist: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_companion_is_built_installed_and_pinned_first(tmp_path: Path, fixture_build: FixtureBuild) -> None:
    # The companion's build is the session's sm_86 build of fixture-ext (the same recipe, so the same
    # key): found in the cache, then installed and verified as a fresh one is.
    recipe, cache = app_recipe(tmp_path), str(fixture_build.copy_cache(tmp_path / "cache"))
    no_arch = run_builder("plan", str(recipe), "--cache", cache)
    assert no_arch.returncode == 2, no_arch.stderr
    assert "companion fixture-ext: no GPU is visible and no --arch was given" in no_arch.stderr
    assert "--no-companions drops it" in no_arch.stderr

    plan = builder_json("plan", str(recipe), "--arch", "86", "--cache", cache)
    assert plan["companions"] == {"fixture-ext": PINNED} and plan["archs"] == ["86"]
    shown = run_builder("plan", str(recipe), "--arch", "86", "--cache", cache).stdout
    assert f"companions (built first):\n  fixture-ext {PINNED}" in shown
    venv = make_venv(tmp_path / "venv")
    built = builder_json("build", str(recipe), "--arch", "86", "--python", str(venv), "--cache", cache)
    [companion] = built["companions"]
    assert companion["plan"]["recipe"] == "fixture-ext" and companion["installed_into"] == str(venv)
    assert companion["verified"]["cubins"] == {"fixture_ext_cuda": ["86"]}
    assert built["plan"]["local_version"] == label("86")
    assert f"fixture-ext=={PINNED}" in requires(venv, "fixture-app")
    assert installed_version(venv, "fixture-ext") == PINNED  # what the pin asks for is what is installed
    assert built["verified"]["imports"] == ["fixture_app"]

    again = builder_json("build", str(recipe), "--arch", "86", "--python", str(venv), "--cache", cache)
    assert again["cache_hit"] and again["companions"][0]["cache_hit"]
    assert again["cache_key"] == built["cache_key"]
    told = run_builder("build", str(recipe), "--arch", "86", "--python", str(venv), "--cache", cache).stdout
    assert f"cache hit: {companion['wheel']}" in told and f"cache hit: {built['wheel']}" in told


def test_no_companions_drops_the_requirement(tmp_path: Path) -> None:
    recipe, cache = app_recipe(tmp_path), str(tmp_path / "cache")
    plan = builder_json("plan", str(recipe), "--no-companions", "--cache", cache)  # no --arch needed
    assert plan["companions"] == {"fixture-ext": "dropped"} and plan["archs"] == []
    venv = make_venv(tmp_path / "venv")
    built = builder_json("build", str(recipe), "--no-companions", "--no-install", "--cache", cache)
    assert built["companions"] == [] and built["plan"]["local_version"] == label()
    install = run_builder("install", built["wheel"], "--python", str(venv), "--cache", cache)
    assert install.returncode == 0, install.stderr
    assert not [line for line in requires(venv, "fixture-app") if line.startswith("fixture-ext")]
