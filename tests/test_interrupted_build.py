"""Real signals during a real fixture compile (nvcc, ninja, pip): nothing builder started is left
running, nothing is left in the temp dir, the build dir is kept; after kill -9 the compilers end
within seconds, and a rebuild moves the dead build aside and compiles each file once; a second
build of a key says whose build it waits for; a read-only cache still serves its hits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, TORCHEXT, read_only_dir, run_builder, wait_for, write_recipe

COMPILERS = {"nvcc", "cicc", "ptxas", "cc1plus"}
SOURCES = ["csrc/binding.cpp", "csrc/vec_add.cu", "csrc/vec_scale.cu", "csrc/vec_sum.cu"]


def start_build(recipe: Path, cache: Path, tmp: Path, stderr: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`builder build` of the fixture, its build directories under `cache`/build and its temp dir
    `tmp` (which must stay empty); in a session of its own so the test can end what is left should
    it fail."""
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "BUILDER_BUILD_DIR": str(cache / "build")}
    with stderr.open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "builder", "build", str(recipe), "--arch", "86",
                                 "--no-install", "--cache", str(cache), *extra], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def compiling(build: subprocess.Popen[bytes], cache: Path) -> list[psutil.Process]:
    """Every process the build has started, once one of them is a compiler working in the cache's
    build directory (not a toolkit probe of the plan); else an empty list."""
    try:
        family = psutil.Process(build.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        pytest.fail("the build ended before it compiled")
    for process in family:
        with contextlib.suppress(psutil.Error):
            if process.name() in COMPILERS and process.cwd().startswith(str(cache / "build")):
                return family
    return []


def still_running(family: list[psutil.Process]) -> list[str]:
    left = []
    for process in family:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {process.name()}")
        except psutil.Error:
            pass
    return left


def working_in(root: Path) -> list[str]:
    """Processes on this machine whose TMPDIR or working directory lies under `root`."""
    found = []
    for process in psutil.process_iter(["name", "cwd", "environ", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
            continue
        places = [process.info["cwd"] or "", (process.info["environ"] or {}).get("TMPDIR", "")]
        if any(place.startswith(str(root)) for place in places):
            found.append(f"{process.pid} {process.info['name']}")
    return found


def end_test_build(build: subprocess.Popen[bytes]) -> None:
    """Should an assertion fail midway, nothing of the test's build outlives it."""
    if build.poll() is None:
        build.kill()
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == build.pid:
                process.kill()
        except (OSError, psutil.Error):
            pass
    build.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_compile_ends_every_child_and_temp_dir(signum: int, fixture_recipe: Path,
                                                                 tmp_path: Path) -> None:
    cache, tmp, stderr = tmp_path / "cache", tmp_path / "tmp", tmp_path / "stderr"
    build = start_build(fixture_recipe, cache, tmp, stderr)
    try:
        family = wait_for(lambda: compiling(build, cache), "a compiler running")
        os.kill(build.pid, signum)
        assert build.wait(timeout=120) == 128 + signum
    finally:
        end_test_build(build)
    said = stderr.read_text()
    assert f"interrupted ({signal.Signals(signum).name})" in said
    assert not still_running(family)
    assert not working_in(tmp_path)
    assert not list(tmp.iterdir())
    [work] = [path for path in (cache / "build").iterdir() if path.is_dir()]  # beside it: KEY.lock
    assert f"build directory kept for inspection: {work}" in said
    assert (work / "src").is_dir() and not (work / "tmp").exists() and not (work / "owner.json").exists()
    assert not (cache / "entries").exists() or not any((cache / "entries").iterdir())
    for kept in (cache / "costs").glob("*.json"):  # the compiles that ended before the signal, if any
        assert json.loads(kept.read_text())["unfinished"] is True


def test_a_second_build_of_a_key_says_whose_build_it_waits_for(fixture_recipe: Path, tmp_path: Path) -> None:
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    first = start_build(fixture_recipe, cache, tmp, tmp_path / "first.stderr")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: compiling(first, cache), "the first build compiling")
        second = start_build(fixture_recipe, cache, tmp, tmp_path / "second.stderr")
        line = wait_for(lambda: next((line for line in (tmp_path / "second.stderr").read_text().splitlines()
                                      if "waiting for another build" in line), None), "the second build waiting")
        assert f": pid {first.pid} (" in line and " since " in line and "builder build" in line
        os.kill(second.pid, signal.SIGTERM)
        assert second.wait(timeout=120) == 143
        os.kill(first.pid, signal.SIGTERM)
        assert first.wait(timeout=120) == 143
    finally:
        end_test_build(first)
        if second is not None:
            end_test_build(second)
    assert not working_in(tmp_path)
    assert not list(tmp.iterdir())


def test_kill_9_of_a_ccache_build_ends_the_compiles_in_sccaches_server(fixture_recipe: Path, tmp_path: Path) -> None:
    """Under --ccache the compilers run in sccache's server, which left to itself would leave every
    session (a daemon); builder starts it in a session of its own, so kill -9 ends it too."""
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    build = start_build(fixture_recipe, cache, tmp, tmp_path / "stderr", "--ccache")
    try:
        family = wait_for(lambda: compiling(build, cache), "a compiler running under sccache")
        assert any(p.name() == "sccache" for p in family if p.is_running())
        os.kill(build.pid, signal.SIGKILL)
        build.wait()
        wait_for(lambda: not still_running(family), "the compilers of a --ccache build killed with -9 ended",
                 seconds=60)
    finally:
        end_test_build(build)


@pytest.fixture(scope="module")
def rebuilt_after_kill_9(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A build killed with -9 midway (its compilers orphaned), then the same key built again."""
    root = tmp_path_factory.mktemp("kill9")
    recipe = write_recipe(root, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    cache, tmp = root / "cache", root / "tmp"
    build = start_build(recipe, cache, tmp, root / "killed.stderr")
    try:
        family = wait_for(lambda: compiling(build, cache), "a compiler running")
        os.kill(build.pid, signal.SIGKILL)
        build.wait()
        # builder ran no handler, but each child session's leader (builder/session_guard.py) saw
        # it gone and ends its session: within seconds, not at the next build.
        wait_for(lambda: not still_running(family), "the compilers of a build killed with -9 ended", seconds=60)
        orphans = still_running(family)
        rebuilt = run_builder("build", str(recipe), "--arch", "86", "--no-install", "--cache", str(cache),
                              env={"TMPDIR": str(tmp), "BUILDER_BUILD_DIR": str(cache / "build")},
                              check=True)  # not --json: its progress lines are read
    finally:
        end_test_build(build)
    [entry] = (cache / "entries").glob("*/entry.json")
    return {"root": root, "recipe": recipe, "cache": cache, "tmp": tmp, "family": family, "orphans": orphans,
            "entry": json.loads(entry.read_text()), "stderr": rebuilt.stderr}


def test_a_rebuild_after_kill_9_ends_the_orphans_and_compiles_each_file_once(rebuilt_after_kill_9: dict) -> None:
    built = rebuilt_after_kill_9
    assert "stored " in built["stderr"] and "cache hit" not in built["stderr"]
    assert Counter(f["file"] for f in built["entry"]["costs"]["files"]) == Counter(SOURCES)
    assert not still_running(built["family"])
    assert not working_in(built["root"])
    [stale] = (built["cache"] / "build").glob("*.stale-*")
    assert (stale / "owner.json").is_file()
    assert f"moved it aside to {stale}" in built["stderr"]
    if built["orphans"]:  # what kill -9 left compiling was ended by the rebuild, and said so
        assert "process(es) it left running" in built["stderr"]
    assert not list(built["tmp"].iterdir())


def test_a_read_only_cache_serves_its_hits_and_refuses_a_build_in_one_line(rebuilt_after_kill_9: dict) -> None:
    built = rebuilt_after_kill_9
    cache, recipe = built["cache"], str(built["recipe"])
    with read_only_dir(cache):
        hit = run_builder("build", recipe, "--arch", "86", "--no-install", "--cache", str(cache), "--json")
        other = run_builder("build", recipe, "--arch", "80", "--no-install", "--cache", str(cache))
    assert hit.returncode == 0, hit.stderr
    assert json.loads(hit.stdout)["cache_hit"] is True
    assert other.returncode == 13, other.stderr
    errors = [line for line in other.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: the cache {cache} is read-only here, so nothing new can be built into it"]
    assert "--cache DIR or BUILDER_CACHE_DIR" in other.stderr and "Traceback" not in other.stderr
