"""Real builds of the fixture extension through the CLI: nvcc, pip, cuobjdump, fresh venvs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from builder.delivery.verify import find_cuobjdump, list_cubins
from builder.files import sha256_of
from builder.store.retag import read_provenance
from tests.conftest import (
    ROOT,
    TORCHEXT,
    FixtureBuild,
    builder_json,
    label,
    make_venv,
    read_only_dir,
    run_builder,
    running_torch_version,
    write_recipe,
)

CUOBJDUMP = find_cuobjdump(Path(sys.executable))


def wheel_cubins(wheel: Path, tmp_path: Path) -> list[str]:
    """Arch names of the cubins in the extension inside a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.startswith("fixture_ext_cuda") and n.endswith(".so")]
        archive.extract(name, tmp_path)
    assert CUOBJDUMP is not None
    return list_cubins(CUOBJDUMP, tmp_path / name)


def compile_logs(cache: Path) -> list[Path]:
    return sorted((cache / "logs").glob("fixture-ext-*.log")) if (cache / "logs").is_dir() else []


@pytest.fixture
def built(fixture_build: FixtureBuild) -> dict:
    """The session's one sm_86 build of the fixture, installed into a fresh venv (tests/conftest.py)."""
    return {"recipe": fixture_build.recipe, "cache": fixture_build.cache, "venv": fixture_build.venv,
            "result": fixture_build.result, "root": fixture_build.root}


def test_sm86_build_installs_imports_and_holds_only_sm86(built: dict) -> None:
    result = built["result"]
    assert result["cache_hit"] is False
    assert result["installed_into"] == str(built["venv"])
    assert result["verified"]["cubins"] == {"fixture_ext_cuda": ["86"]}
    wheel = Path(result["wheel"])
    assert f"+{label('86')}-" in wheel.name
    provenance = read_provenance(wheel)
    assert provenance["archs"] == ["86"] and provenance["cache_key"] == result["cache_key"]
    code = ("import torch, fixture_ext; a = torch.ones(3); "
            "print(fixture_ext.__file__, fixture_ext.vec_add.__doc__.strip())")
    out = subprocess.run([built["venv"], "-c", code], capture_output=True, text=True, check=True).stdout
    assert str(built["root"] / "venv") in out
    requires = subprocess.run(
        [built["venv"], "-c", "import importlib.metadata as m; print(m.requires('fixture-ext'))"],
        capture_output=True, text=True, check=True).stdout
    assert "torch" not in requires


def test_compiler_wrappers_on_path_are_not_used(built: dict) -> None:
    """The session's build ran with failing `ccache` and `sccache` first on PATH (conftest's
    wrappers_on_path): the plan chose no wrapper, so neither ran and the user's SCCACHE_DIR stayed
    unwritten."""
    assert built["result"]["plan"]["env"]["TORCH_NO_COMPILER_WRAPPER"] == "1"
    assert not (built["root"] / "wrapper-calls.txt").exists()
    assert not (built["root"] / "user-sccache").exists()
    assert built["result"]["sccache"] is None


def test_the_host_code_keeps_the_interpreters_optimization(built: dict) -> None:
    """setuptools uses CFLAGS instead of the interpreter's compile flags (-O3, -DNDEBUG): builder's
    path-mapping flags go in CPPFLAGS, which it appends, so the host code stays optimized and its
    paths mapped (builder/building/reproducible.py)."""
    interpreter = sysconfig.get_config_var("CFLAGS").split()
    [line] = [line for line in Path(built["result"]["log"]).read_text().splitlines()
              if "csrc/binding.cpp -o" in line]
    for flag in ("-O3", "-DNDEBUG"):
        assert (flag in line.split()) is (flag in interpreter), line
    assert "-ffile-prefix-map=" in line


def test_the_wheel_carries_the_manylinux_tag_its_symbols_allow(built: dict) -> None:
    wheel = Path(built["result"]["wheel"])
    tag = wheel.name.removesuffix(".whl").rsplit("-", 1)[1]
    assert re.fullmatch(r"manylinux_2_\d+_x86_64", tag), wheel.name  # and pip installed it (the fixture above)
    shown = subprocess.run([Path(sys.executable).parent / "auditwheel", "show", str(wheel)], capture_output=True,
                           text=True, check=True).stdout
    # auditwheel alone calls it linux_x86_64 (libc10 is no system library); its symbols' constraint is ours
    assert re.search(rf'constrains the platform tag to\s+"{tag}"', shown), shown
    glibc = [tuple(int(n) for n in re.findall(r"\d+", t)[:2]) for t in (tag, built["result"]["plan"]["platform_tag"])]
    assert glibc[0] <= glibc[1]  # never newer than this machine's glibc, what `builder plan` promised
    python, abi = wheel.name.split("-")[-3:-1]
    with zipfile.ZipFile(wheel) as archive:
        [wheel_file] = [n for n in archive.namelist() if n.endswith(".dist-info/WHEEL")]
        assert f"Tag: {python}-{abi}-{tag}" in archive.read(wheel_file).decode()


def test_a_rebuild_from_another_cache_is_byte_identical(built: dict, tmp_path: Path) -> None:
    key = built["result"]["cache_key"]
    other = tmp_path / "other-cache"  # another cache root holding the same entry
    shutil.copytree(built["cache"] / "entries" / key, other / "entries" / key)
    result = run_builder("build", str(built["recipe"]), "--arch", "sm_86", "--check", "--cache", str(other),
                         "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checked = json.loads(result.stdout)
    assert checked["reproducible"] is True and checked["cache_key"] == key and checked["members"] == []
    assert Path(checked["rebuilt"]).read_bytes() == Path(built["result"]["wheel"]).read_bytes()
    assert not list((other / "entries").iterdir())[1:]  # --check stores nothing


def test_check_needs_the_entry(fixture_recipe: Path, tmp_path: Path) -> None:
    result = run_builder("build", str(fixture_recipe), "--arch", "86", "--check", "--cache", str(tmp_path / "c"))
    assert result.returncode == 2 and "nothing to check" in result.stderr


def test_second_build_is_a_cache_hit_and_runs_no_compiler(built: dict, session_build_dir: Path) -> None:
    logs_before = compile_logs(built["cache"])
    again = builder_json("build", str(built["recipe"]), "--arch", "86", "--no-install",
                         "--cache", str(built["cache"]))
    assert again["cache_hit"] is True
    assert again["cache_key"] == built["result"]["cache_key"]
    assert compile_logs(built["cache"]) == logs_before
    assert not (session_build_dir / again["cache_key"]).exists()


def test_cache_commands_and_pip_find_links(built: dict, tmp_path: Path) -> None:
    cache = str(built["cache"])
    listed = builder_json("cache", "list", "--cache", cache)
    assert [row["key"] for row in listed] == [built["result"]["cache_key"]]
    shown = builder_json("cache", "show", built["result"]["cache_key"][:8], "--cache", cache)
    assert shown["sha256"] == built["result"]["sha256"]
    venv = make_venv(tmp_path / "other")
    for how in (["--find-links", f"{cache}/wheels"], ["--index-url", f"file://{cache}/simple"]):
        subprocess.run([venv, "-m", "pip", "install", "-q", "--no-index" if how[0] == "--find-links"
                        else "--no-cache-dir", *how, "fixture-ext"], check=True)
        subprocess.run([venv, "-c", "import fixture_ext"], check=True)
        subprocess.run([venv, "-m", "pip", "uninstall", "-q", "-y", "fixture-ext"], check=True)


def test_install_refuses_a_target_without_that_torch(built: dict, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    result = run_builder("install", built["result"]["cache_key"], "--python", str(tmp_path / "bare/bin/python"),
                         "--cache", str(built["cache"]))
    assert result.returncode == 10, result.stderr
    assert f"the wheel needs torch {running_torch_version()}, the target has no torch" in result.stderr


def corrupt_copy(cache: Path, into: Path) -> tuple[Path, Path]:
    """A copy of `cache` whose one entry's wheel has a byte flipped: (the entry, its wheel)."""
    subprocess.run(["cp", "-a", str(cache), str(into)], check=True)
    [entry] = (into / "entries").iterdir()
    wheel = entry / json.loads((entry / "entry.json").read_text())["wheel"]  # not its variant form beside it
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    return entry, wheel


def test_corrupt_cache_entry_is_refused_at_install(built: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    entry, _ = corrupt_copy(built["cache"], cache)
    result = run_builder("install", entry.name, "--cache", str(cache))
    assert result.returncode == 9 and "is corrupt" in result.stderr


def test_cache_rm_removes_the_entry_its_wheel_link_and_index_page(built: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    subprocess.run(["cp", "-a", str(built["cache"]), str(cache)], check=True)
    key = built["result"]["cache_key"]
    assert (cache / "simple" / "fixture-ext" / "index.html").is_file()
    assert builder_json("cache", "rm", key[:10], "--cache", str(cache)) == {"removed": key}
    assert not (cache / "entries" / key).exists()
    assert not list((cache / "wheels").glob("*.whl"))
    assert not (cache / "simple" / "fixture-ext").exists()
    missing = run_builder("cache", "show", key, "--cache", str(cache))
    assert missing.returncode == 9 and f"no cache entries in {cache} match '{key}'" in missing.stderr


def test_two_archs_give_exactly_those_cubins(fixture_recipe: Path, tmp_path: Path) -> None:
    result = builder_json("build", str(fixture_recipe), "--arch", "8.0;9.0", "--no-install",
                          "--cache", str(tmp_path / "cache"))
    wheel = Path(result["wheel"])
    assert ".sm80.sm90-" in wheel.name
    assert wheel_cubins(wheel, tmp_path) == ["80", "90"]


def test_two_concurrent_builds_of_one_key_compile_once(fixture_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "builder", "build", str(fixture_recipe), "--arch", "86", "--no-install",
            "--json", "--cache", str(cache)]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=1800) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    hits = sorted(json.loads(out)["cache_hit"] for out, _ in outputs)
    assert hits == [False, True]
    assert len(compile_logs(cache)) == 1


@pytest.mark.slow  # two builds; tests/test_interrupted_build.py kills builds in the fast suite
def test_a_build_killed_midway_leaves_no_entry(fixture_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "builder", "build", str(fixture_recipe), "--arch", "86", "--no-install",
            "--cache", str(cache)]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # wait until the compiler is really running
        logs = compile_logs(cache)
        if logs and "bin/nvcc" in logs[0].read_text(errors="replace"):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the build never reached the compiler")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    entries = cache / "entries"
    assert not entries.exists() or not any(entries.iterdir())
    assert not list(cache.glob("wheels/*.whl"))
    rebuilt = builder_json("build", str(fixture_recipe), "--arch", "86", "--no-install", "--cache", str(cache))
    assert rebuilt["cache_hit"] is False


def test_a_failing_compile_names_the_error_and_caches_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    failing = write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}',
                           extra='[build.env]\nFIXTURE_FAIL = "1"\n')  # builds see the recipe's env, not the shell's
    result = run_builder("build", str(failing), "--arch", "86", "--cache", str(cache), "--json")
    assert result.returncode == 8, result.stderr
    assert "first error:" in result.stderr and "fixture asked to fail" in result.stderr
    log_line = next(line for line in result.stderr.splitlines() if "full log:" in line)
    assert Path(log_line.split("full log:")[1].strip()).is_file()
    failure = json.loads(result.stdout)  # --json: the failure as one document on stdout
    assert failure["kind"] == "BuildError" and failure["exit_code"] == 8
    assert "fixture asked to fail" in failure["first_error"] and Path(failure["log"]).is_file()
    assert not (cache / "entries").exists() or not any((cache / "entries").iterdir())


def test_a_read_only_cache_serves_a_hit_into_an_install(fixture_build: FixtureBuild, tmp_path: Path) -> None:
    """A cache this user cannot write (a read-only mount, as a team's shared cache often is) installs
    and verifies its hits, by `build` and by `install KEY`: the install log goes to the user's own log
    directory (platformdirs, under XDG_STATE_HOME) and the output says where. Both a cache that built
    (logs/ and the rest present) and one that `cache push` filled (entries and index only)."""
    state = tmp_path / "state"
    log = state / "builder" / "log" / "install.log"
    key = fixture_build.result["cache_key"]
    for name, source in (("built", fixture_build.cache), ("pushed", fixture_build.shared)):
        cache = tmp_path / name
        shutil.copytree(source, cache, ignore=shutil.ignore_patterns("locks", "staging"))
        before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
        venv, other = make_venv(tmp_path / f"venv-{name}"), make_venv(tmp_path / f"other-{name}")
        with read_only_dir(cache):
            hit = run_builder("build", str(fixture_build.recipe), "--arch", "86", "--python", str(venv),
                              "--cache", str(cache), env={"XDG_STATE_HOME": str(state)})
            installed = run_builder("install", key[:10], "--python", str(other), "--cache", str(cache),
                                    env={"XDG_STATE_HOME": str(state)})
        assert hit.returncode == 0, hit.stderr
        assert "cache hit (local cache)" in hit.stderr and "Read-only file system" not in hit.stderr
        assert f"the cache {cache} is read-only here: the install log goes to {log}" in hit.stderr
        assert f"installed into {venv}; verified" in hit.stdout
        assert installed.returncode == 0, installed.stderr
        assert f"the install log goes to {log}" in installed.stderr
        for python in (venv, other):
            subprocess.run([python, "-c", "import fixture_ext"], check=True)
        assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before
    assert "pip" in log.read_text()


def test_a_hit_whose_wheel_is_corrupt_is_said_and_built_again_without_install(built: dict, tmp_path: Path) -> None:
    """The sha256 is checked on every hit, not only on install: a flipped byte in the stored wheel is
    said and the entry built again (as a corrupt entry.json is); a cache that cannot be written
    then refuses in one line, with the warning before it."""
    cache = tmp_path / "cache"
    entry, wheel = corrupt_copy(built["cache"], cache)
    args = ("build", str(built["recipe"]), "--arch", "86", "--no-install", "--cache", str(cache))
    warning = f"warning: cache entry {entry.name} is corrupt: {wheel.name} has sha256"
    with read_only_dir(cache):
        refused = run_builder(*args)
    assert refused.returncode == 13, refused.stderr
    assert warning in refused.stderr and "cache hit" not in refused.stderr
    assert f"error: the cache {cache} is read-only here" in refused.stderr
    rebuilt = run_builder(*args)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert warning in rebuilt.stderr and "building it again" in rebuilt.stderr
    assert "cache hit" not in rebuilt.stderr and f"stored {wheel.name}" in rebuilt.stderr
    stored = json.loads((entry / "entry.json").read_text())
    assert sha256_of(entry / stored["wheel"]) == stored["sha256"] == built["result"]["sha256"]  # reproducible
