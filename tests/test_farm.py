"""A build farm on loopback, for real: `builder farm scheduler` and two `builder farm server`s
(sccache-dist, bubblewrap sandboxes, one core each), `builder farm status` and `doctor` asking the
scheduler, the fixture built through the farm (both servers ran steps; the same SASS as a local
build; `builder stats` says which servers ran each file's steps), and a server killed with -9
costing the build nothing but time (the steps it failed recorded as compiled here); a scheduler
that does not answer costs no build either."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from builder.building.sccache import describe
from tests.conftest import ROOT, FixtureBuild, builder_json, make_venv, run_builder, wait_for
from tests.test_build_fixture import CUOBJDUMP
from tests.test_ci_github import expand_expressions, job_of

NO_SANDBOX = shutil.which("bwrap") is None or os.geteuid() != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(*args: str, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "builder", *args, "--cache", str(cache)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def farm() -> Iterator[dict[str, Any]]:
    """A scheduler and two build servers of one core each, every one a `builder farm` process."""
    if NO_SANDBOX:
        pytest.skip("a build server needs root and bubblewrap: make system-tools")
    root = Path(tempfile.mkdtemp(prefix="farm-"))
    cache, scheduler_port = root / "farm-cache", free_port()
    url = f"http://127.0.0.1:{scheduler_port}"
    processes = {"scheduler": start("farm", "scheduler", "--listen", f"127.0.0.1:{scheduler_port}", cache=cache,
                                    log=root / "scheduler.out")}
    token_dir = cache / "farm"
    wait_for(lambda: (token_dir / "server-token").is_file(), "the scheduler's tokens")
    servers = {}
    for name in ("one", "two"):
        port = free_port()
        servers[name] = f"127.0.0.1:{port}"
        processes[name] = start("farm", "server", "--scheduler", url, "--token-file", str(token_dir / "server-token"),
                                "--addr", servers[name], "--cores", "1", cache=cache, log=root / f"{name}.out")
    env = {"BUILDER_FARM": url, "BUILDER_FARM_TOKEN_FILE": str(token_dir / "client-token")}

    def both_registered() -> bool:
        status = run_builder("farm", "status", "--json", env=env)
        return status.returncode == 0 and json.loads(status.stdout)["servers"] == 2

    try:
        wait_for(both_registered, "two build servers registered with the scheduler")
        yield {"root": root, "url": url, "env": env, "servers": servers, "processes": processes}
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def sass(wheel: Path, tmp_path: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".so")]
        so = Path(archive.extract(name, tmp_path / wheel.stem))
    return subprocess.run([CUOBJDUMP, "-sass", str(so)], capture_output=True, text=True, check=True).stdout


def farm_records(cache: Path, counts: dict[str, Any], servers: set[str]) -> None:
    """The records of the newest fixture build in `cache` (`builder stats`), one per nvcc-compiled
    file, checked against the build's sccache `counts`: each file's steps ran on the farm's
    `servers` or fell back to here, and every step the build counted is in some file's record but
    one, binding.cpp's host compile (it goes through sccache outside the gate with --ccache)."""
    [newest] = builder_json("stats", "fixture-ext", "--cache", str(cache))
    files: list[dict[str, Any]] = newest["slowest"]
    assert newest["farm"] and sorted(f["file"] for f in files) == [f"csrc/vec_{k}.cu" for k in ("add", "scale", "sum")]
    assert all((f["remote"] or f["local_fallback"]) and set(f["remote"]) <= servers for f in files), files
    placed = sum((Counter(f["remote"]) for f in files), Counter())
    distributed, failed = Counter(counts.get("distributed", {})), counts.get("distributed_failed", 0)
    fell_back = sum(f["local_fallback"] for f in files)
    assert not placed - distributed and fell_back <= failed, (counts, files)
    assert (distributed - placed).total() + failed - fell_back == 1, (counts, files)


def test_status_and_doctor_ask_the_scheduler(farm: dict[str, Any]) -> None:
    status = builder_json("farm", "status", env=farm["env"])
    assert status == {"url": farm["url"], "servers": 2, "cpus": 2, "in_progress": 0}
    doctor = run_builder("doctor", "--json", env=farm["env"])
    assert json.loads(doctor.stdout)["farm"]["servers"] == 2
    shown = run_builder("config", env={**farm["env"], "BUILDER_FARM_TOKEN": "secret-token"})
    assert "secret-token" not in shown.stdout and "(set, not shown)" in shown.stdout


def test_a_build_on_the_farm_spreads_over_its_servers_and_gives_the_local_sass(
        farm: dict[str, Any], fixture_build: FixtureBuild, tmp_path: Path) -> None:
    built = builder_json("build", str(fixture_build.recipe), "--arch", "86", "--no-install",
                         "--cache", str(tmp_path / "cache"), env=farm["env"])
    plan = built["plan"]
    assert plan["ccache"] is True and plan["farm"].startswith(f"{farm['url']}: 2 build server(s), 2 CPU(s)")
    assert plan["jobs"]["jobs"] == plan["jobs"]["cores"] + 2
    assert set(built["sccache"]["distributed"]) == set(farm["servers"].values()), built["sccache"]
    farm_records(tmp_path / "cache", built["sccache"], set(farm["servers"].values()))
    assert built["cache_key"] == fixture_build.result["cache_key"]  # the farm is no part of the key
    assert sass(Path(built["wheel"]), tmp_path) == sass(Path(fixture_build.result["wheel"]), tmp_path)
    token = Path(farm["env"]["BUILDER_FARM_TOKEN_FILE"]).read_text().strip()
    assert token not in json.dumps(built) and token not in Path(built["log"]).read_text()
    assert token not in (tmp_path / "cache" / "entries" / built["cache_key"] / "entry.json").read_text()


def test_on_a_farm_the_memory_gate_counts_one_compile_per_core_here(
        farm: dict[str, Any], fixture_recipe: Path, tmp_path: Path) -> None:
    """On one core here (taskset), with a budget of one compile's estimate: without a farm the gate
    runs the three kernel files one after another; on the farm sccache runs one process per core
    here whatever happens to the steps, so the gate counts only the heaviest compile running, and
    the files compile at the same time."""
    built = subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "builder", "build", str(fixture_recipe),
                            "--arch", "86", "--no-install", "--memory-budget", "1", "--json",
                            "--cache", str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, **farm["env"]})
    assert built.returncode == 0, built.stderr
    plan = json.loads(built.stdout)["plan"]
    assert plan["jobs"]["cores"] == 1 and plan["jobs"]["jobs"] == 3, plan["jobs"]
    assert "the heaviest 1 running (sccache runs one process per core here)" in plan["jobs"]["reason"]
    [newest] = builder_json("stats", "fixture-ext", "--top", "5", "--cache", str(tmp_path / "cache"))
    files = newest["slowest"]
    assert {f["expected_mb"] for f in files} == {1024.0}  # the recipe's job_memory_gb: the whole budget
    overlapping = [(a["file"], b["file"]) for a in files for b in files
                   if a["file"] < b["file"] and a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, files


def test_a_server_killed_costs_time_not_the_build(farm: dict[str, Any], fixture_recipe: Path, tmp_path: Path) -> None:
    """kill -9 of one server's builder: its sccache-dist ends with it (builder/session_guard.py);
    the scheduler still hands out the dead server for a while, and sccache compiles those steps
    here instead, which the build says."""
    server = farm["processes"]["two"]
    family = psutil.Process(server.pid).children(recursive=True)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family),
             "the killed server's sccache-dist ended", seconds=30)
    built = run_builder("build", str(fixture_recipe), "--arch", "86", "--no-install", "--force",
                        "--cache", str(tmp_path / "cache"), "--json", env=farm["env"])
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    assert farm["servers"]["two"] not in result["sccache"].get("distributed", {})
    if result["sccache"].get("distributed_failed"):  # what the build's progress line says of them
        assert "were compiled here instead" in describe(result["sccache"])
    farm_records(tmp_path / "cache", result["sccache"], {farm["servers"]["one"]})  # the failed steps: fell back
    if result["sccache"].get("distributed_failed"):  # and why, kept beside the build's log
        assert "falling back to local" in Path(result["log"]).with_suffix(".sccache.log").read_text()
    assert "arch = sm_86" in sass(Path(result["wheel"]), tmp_path)


def test_a_generated_ci_job_plans_on_the_farm_its_secrets_name(farm: dict[str, Any], tmp_path: Path) -> None:
    """The job env `builder ci github` writes, with the repository's BUILDER_FARM and
    BUILDER_FARM_TOKEN secrets set to this farm (tests/test_ci_github.py runs the job without them):
    a build of the cell plans its jobs on the farm's CPUs."""
    workflow = tmp_path / "builder.yml"
    run_builder("ci", "github", "--recipe", "tests/fixtures/torchext/fixture-ext.toml", "--torch", "2.8.0",
                "--cuda", "12.8", "--arch", "86", "--builder-source", ".", "--output", str(workflow), check=True)
    token = Path(farm["env"]["BUILDER_FARM_TOKEN_FILE"]).read_text().strip()
    values = {"secrets.BUILDER_FARM": farm["url"], "secrets.BUILDER_FARM_TOKEN": token,
              "secrets.BUILDER_CACHE_URL": str(tmp_path / "shared")}
    job_env = {name: expand_expressions(str(value), values) for name, value in job_of(workflow)["env"].items()
               if name.startswith("BUILDER_")}
    plan = builder_json("plan", str(ROOT / "tests/fixtures/torchext/fixture-ext.toml"), "--arch", "86",
                        "--cache", str(tmp_path / "cache"), env=job_env)
    assert plan["ccache"] is True and plan["farm"].startswith(f"{farm['url']}: 2 build server(s), 2 CPU(s)")
    assert plan["jobs"]["jobs"] == plan["jobs"]["cores"] + 2


def test_a_farm_that_does_not_answer_costs_time_not_the_build(fixture_build: FixtureBuild, tmp_path: Path) -> None:
    """The farm's scheduler is down (nothing listens at its port): the build warns and plans for this
    machine alone, and a key the cache holds installs as ever (a team's cells that are built go on
    while its farm is away). No sandbox needed: nothing is sent."""
    env = {"BUILDER_FARM": f"http://127.0.0.1:{free_port()}", "BUILDER_FARM_TOKEN": "token"}
    cache = fixture_build.copy_cache(tmp_path / "cache")
    venv = make_venv(tmp_path / "venv")
    built = builder_json("build", str(fixture_build.recipe), "--arch", "86", "--cache", str(cache),
                         "--python", str(venv), env=env)
    assert built["cache_hit"] and built["cache_key"] == fixture_build.result["cache_key"]
    plan = built["plan"]
    [warning] = [note for note in plan["notes"] if "farm" in note]
    assert warning.startswith(f"warning: the farm {env['BUILDER_FARM']} did not answer")
    assert warning.endswith("; compiling here alone")
    assert plan["farm"] is None and plan["jobs"]["jobs"] <= plan["jobs"]["cores"]
    assert built["installed_into"] == str(venv)

    status = run_builder("farm", "status", env=env)  # asked for itself, the farm's absence is the answer
    assert status.returncode == 2 and status.stderr.startswith(f"error: the farm {env['BUILDER_FARM']} did not answer")
