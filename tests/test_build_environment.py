"""What of the user's environment reaches a real build (builder/planning/environment.py), through
the CLI: a compile-affecting variable is shown by `builder plan` and changes the key; a variable no
build reads, or one builder sets itself, never reaches the build. The envprobe fixture's setup.py
writes the environment it ran with into its wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from builder.planning.environment import row_for
from tests.conftest import FIXTURES, ROOT, builder_json, run_builder

RECIPE = FIXTURES / "envprobe" / "envprobe.toml"


def test_plan_shows_a_compile_flag_from_the_environment_and_keys_it(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    plain = builder_json("plan", str(RECIPE), "--cache", cache)
    flagged = builder_json("plan", str(RECIPE), "--cache", cache, env={"CFLAGS": "-O0", "FOO": "1"})
    assert flagged["environment"]["in_key"] == {**plain["environment"]["in_key"], "CFLAGS": "-O0"}
    assert flagged["cache_key"] != plain["cache_key"]
    assert "FOO" not in json.dumps(flagged["environment"]) and flagged["environment"]["ignored"] >= 1
    text = run_builder("plan", str(RECIPE), "--cache", cache, env={"CFLAGS": "-O0", "MAX_JOBS": "1"},
                       check=True).stdout
    assert "from your environment (in the cache key):\n  CFLAGS=-O0" in text
    assert "MAX_JOBS: builder sets it" in text


def test_only_the_table_and_the_plan_reach_the_build(tmp_path: Path) -> None:
    env = {"CFLAGS": "-O0", "FOO": "1", "TORCH_CUDA_ARCH_LIST": "5.0", "LD_LIBRARY_PATH": "/nowhere",
           "PYTHONPATH": "/nowhere", "https_proxy": "http://127.0.0.1:9", "PIP_CONFIG_FILE": str(tmp_path / "pip.conf")}
    result = run_builder("build", str(RECIPE), "--no-install", "--cache", str(tmp_path / "cache"), env=env,
                         check=True)
    assert "note: LD_LIBRARY_PATH from your environment is not passed to the build" in result.stderr
    assert "from your environment (in the cache key): CFLAGS=-O0" in result.stderr
    wheel = Path(result.stdout.split("built: ", 1)[1].split()[0])
    with zipfile.ZipFile(wheel) as archive:
        seen = json.loads(archive.read("envprobe/build_env.json"))
    for name in ("FOO", "LD_LIBRARY_PATH", "PYTHONPATH"):
        assert name not in seen, name
    assert seen["TORCH_CUDA_ARCH_LIST"] == ""  # builder's (no archs for a recipe without kernels)
    assert seen["CFLAGS"].split()[0] == "-O0"  # the user's, then builder's path maps
    assert seen["https_proxy"] == "http://127.0.0.1:9" and seen["HOME"] == os.environ["HOME"]
    assert seen["SOURCE_DATE_EPOCH"] == "315532800" and seen["ENVPROBE_FROM_RECIPE"]
    assert seen["PIP_CONFIG_FILE"] == os.devnull  # builder's: no pip.conf reaches the build's pip
    assert "note: PIP_CONFIG_FILE from your environment is not passed to the build" in result.stderr
    planned = builder_json("plan", str(RECIPE), "--cache", str(tmp_path / "cache"))["env"]
    builders = {"PYTHONUNBUFFERED", "CXXFLAGS", "NVCC_APPEND_FLAGS", "PYTORCH_NVCC", "PIP_BUILD_TRACKER"}
    inherited = {name for name in seen if name not in planned and name not in builders
                 and not name.startswith(("BUILDER_", "CMAKE_"))}  # builder's gate and launchers
    for name in inherited:  # everything else came from the user's environment, through the table
        row = row_for(name)
        assert row is not None and row.kind in ("pass", "key"), name


def test_make_s_own_makeflags_are_no_note_but_its_command_line_variables_are(tmp_path: Path) -> None:
    """builder run from a Makefile (as `make demo` does): MAKEFLAGS holding only make's own output and
    job flags is dropped without a note; one carrying what a build would read (a variable given on
    make's command line, -e) is still noted."""
    out = tmp_path / "plan.json"
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"plan:\n\t@{sys.executable} -m builder plan {RECIPE} --cache {tmp_path / 'cache'} "
                        f"--json > {out}\n")
    # Not under the make running this suite: `make test VAR=1` would hand its VAR=1 down in MAKEFLAGS.
    outside_make = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    dropped = {}
    for flags in ((), ("-j2",), ("-s", "-w"), ("--no-print-directory",), ("FOO=1",), ("-e",)):
        subprocess.run(["make", "-f", str(makefile), *flags], check=True, cwd=ROOT, capture_output=True,
                       env=outside_make)
        dropped[flags] = "MAKEFLAGS" in json.loads(out.read_text())["environment"]["dropped"]
    assert dropped == {(): False, ("-j2",): False, ("-s", "-w"): False, ("--no-print-directory",): False,
                       ("FOO=1",): True, ("-e",): True}
    by_hand = subprocess.run([sys.executable, "-m", "builder", "plan", str(RECIPE), "--cache", str(tmp_path / "cache"),
                              "--json"], env={**outside_make, "MAKEFLAGS": "-j8"}, cwd=ROOT, capture_output=True,
                             text=True, check=True)
    assert "MAKEFLAGS" in json.loads(by_hand.stdout)["environment"]["dropped"]  # the user's, not a running make's
