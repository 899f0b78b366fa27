"""Compile costs: the gate's memory budget, its records, heaviest-first ordering, variants, sccache.

The gate and the ordering ninja run for real: a real ninja (PyPI's) over build files whose
"compiler" really allocates memory (fixtures/hog), and builder's pipeline over the costly fixture
(a cheap and a costly kernel file, compiled by nvcc).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from builder.building.costs import BuildCosts, FileCost, describe, gate_records
from builder.building.ninja_order import reorder
from builder.delivery.verify import run_gpu_check
from builder.errors import VerifyError
from builder.reporting import compile_line_parser
from builder.store import records as stored
from builder.store.cache import Cache
from tests.conftest import FIXTURES, ROOT, builder_json, label, make_venv, run_builder, wrappers_on_path

NINJA = str(Path(sys.executable).parent / "ninja")
GATE = [sys.executable, str(ROOT / "builder" / "building" / "gate.py")]
ORDER = [sys.executable, str(ROOT / "builder" / "building" / "ninja_order.py"), NINJA]
HOG = FIXTURES / "hog" / "hog.py"
COSTLY = FIXTURES / "costly"


def hog_build(directory: Path, jobs: dict[str, tuple[int, float]]) -> Path:
    """A build.ninja with one compile edge per source: name -> (MB it allocates, seconds)."""
    lines = ["rule hog", f"  command = {' '.join(GATE)} {sys.executable} {HOG} $mb $seconds -c $in -o $out"]
    for name, (mb, seconds) in jobs.items():
        (directory / f"{name}.c").write_text("")
        lines += [f"build {name}.o: hog {name}.c", f"  mb = {mb}", f"  seconds = {seconds}"]
    (directory / "build.ninja").write_text("\n".join(lines) + "\n")
    return directory


def gate_env(gate_dir: Path, source_root: Path, *, budget_mb: int, job_mb: int, jobs: int = 64) -> dict[str, str]:
    gate_dir.mkdir(exist_ok=True)
    return {**os.environ, "BUILDER_GATE_DIR": str(gate_dir), "BUILDER_GATE_SOURCE_ROOT": str(source_root),
            "BUILDER_GATE_BUDGET_MB": str(budget_mb), "BUILDER_GATE_JOB_MB": str(job_mb),
            "BUILDER_GATE_CORES": str(jobs)}


def records(gate_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (gate_dir / "records.jsonl").read_text().splitlines()]


class HogSampler:
    """Samples the summed RSS of every running hog.py, the way a watcher of the machine would."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                # hog.py itself (`python hog.py ...`), not the gates waiting to start one
                if (process.info["cmdline"] or [])[1:2] == [str(HOG)] and process.info["memory_info"]:
                    total += process.info["memory_info"].rss
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(0.01)

    def __enter__(self) -> HogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_gate_keeps_running_compiles_inside_the_memory_budget(tmp_path: Path) -> None:
    build = hog_build(tmp_path, {f"unit{i}": (150, 1.0) for i in range(6)})
    gate_dir, budget = tmp_path / "gate", 450
    env = gate_env(gate_dir, build, budget_mb=budget, job_mb=200)  # estimate: 2 fit, 3 do not
    with HogSampler() as sampler:
        subprocess.run([NINJA, "-j6"], cwd=build, env=env, check=True, capture_output=True)
    assert all((build / f"unit{i}.o").is_file() for i in range(6))
    assert 0 < sampler.peak_mb <= budget, sampler.peak_mb
    first = records(gate_dir)
    assert len(first) == 6 and {r["basis"] for r in first} == {"estimate"}
    assert all(140 <= r["peak_mb"] <= 200 for r in first), first  # the hog's 150 MB, seen by the gate
    costs = BuildCosts(key="k", recipe="hog", version="0", archs=[], cuda="", host="", jobs=6, cores=6,
                       memory_budget_gb=budget / 1024,
                       files=[FileCost(**{k: v for k, v in r.items() if k != "returncode"}) for r in first])
    assert costs.concurrent_peak_mb() <= budget
    assert any(r["waited_s"] > 0.5 for r in first)  # some waited for room: the budget, not -j6, decided

    # Read back: the next build expects each file at its recorded peak.
    (gate_dir / "hints.json").write_text(json.dumps(costs.hints()))
    (gate_dir / "records.jsonl").unlink()
    for output in build.glob("*.o"):
        output.unlink()
    with HogSampler() as sampler:
        subprocess.run([NINJA, "-j6"], cwd=build, env=env, check=True, capture_output=True)
    again = records(gate_dir)
    assert {r["basis"] for r in again} == {"record"} and sampler.peak_mb <= budget
    assert all(r["expected_mb"] > r["peak_mb"] * 0.99 for r in again)


def test_a_compile_larger_than_the_budget_still_runs_alone(tmp_path: Path) -> None:
    build = hog_build(tmp_path, {"big": (120, 0.2), "small": (20, 0.2)})
    env = gate_env(tmp_path / "gate", build, budget_mb=50, job_mb=100)
    subprocess.run([NINJA, "-j2"], cwd=build, env=env, check=True, capture_output=True)
    first, second = sorted(records(tmp_path / "gate"), key=lambda r: r["start"])
    assert first["end"] <= second["start"]  # one at a time, and nobody waited forever


def most_at_once(found: list[dict]) -> int:
    """The most compiles the records show running at one moment."""
    return max(sum(r["start"] <= moment < r["end"] for r in found) for moment in (r["start"] for r in found))


def test_ninjas_side_by_side_share_the_builds_jobs(tmp_path: Path) -> None:
    """A setup.py building its extensions at once runs a ninja for each, each with the build's -j:
    the gate keeps their compiles together within the build's jobs."""
    gate_dir = tmp_path / "gate"
    env = gate_env(gate_dir, tmp_path, budget_mb=100_000, job_mb=1, jobs=2)
    ninjas = []
    for extension in ("one", "two"):
        (tmp_path / extension).mkdir()
        build = hog_build(tmp_path / extension, {f"{extension}{i}": (10, 0.5) for i in range(3)})
        ninjas.append(subprocess.Popen([NINJA, "-j3"], cwd=build, env=env, stdout=subprocess.DEVNULL))
    assert [ninja.wait() for ninja in ninjas] == [0, 0]
    found = records(gate_dir)
    assert len(found) == 6 and most_at_once(found) == 2
    assert any(r["waited_s"] > 0.2 for r in found)  # the jobs held them back: memory was plenty


def test_the_progress_counts_the_edges_of_every_ninja_of_the_build(tmp_path: Path) -> None:
    """Two ninjas side by side (3 and 2 edges) into one pipe, as builder reads a setup.py's output:
    one count over both, not each ninja's own [n/N] in turn."""
    for name, edges in (("one", 3), ("two", 2)):
        (tmp_path / name).mkdir()
        rules = ["rule touch", "  command = touch $out"] + [f"build {name}{i}.o: touch" for i in range(edges)]
        (tmp_path / name / "build.ninja").write_text("\n".join(rules) + "\n")
    output = subprocess.run(["sh", "-c", f"(cd one && {NINJA} -v) & (cd two && {NINJA} -v) & wait"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    seen: list[tuple[int, int]] = []
    on_line = compile_line_parser(lambda done, total, what: seen.append((done, total)))
    for line in output.splitlines():
        on_line(line)
    assert [done for done, _ in seen] == [1, 2, 3, 4, 5] and seen[-1] == (5, 5)
    assert all(done <= total for done, total in seen)


def test_configure_probes_are_neither_gated_nor_recorded(tmp_path: Path) -> None:
    """CMake's compiler probes (its Modules/ files, outside the tree; try_compile projects under
    CMakeFiles/) run as they are: only the package's own files are costs."""
    env = gate_env(tmp_path / "gate", tmp_path, budget_mb=1000, job_mb=1)
    outside = tmp_path.parent / "CMakeCUDACompilerABI.c"
    scratch = tmp_path / "build" / "CMakeFiles" / "CMakeScratch" / "TryCompile-x" / "src.c"
    own = tmp_path / "csrc" / "own.c"
    for source in (outside, scratch, own):
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("")
        subprocess.run([*GATE, sys.executable, str(HOG), "1", "0", "-c", str(source), "-o", f"{source}.o"],
                       cwd=tmp_path, env=env, check=True, timeout=60)
    assert [r["file"] for r in records(tmp_path / "gate")] == ["csrc/own.c"]


def test_a_compiler_started_by_a_gated_compiler_is_not_gated_again(tmp_path: Path) -> None:
    # The outer compile holds the only room the budget has; a gated inner one must not wait for it.
    (tmp_path / "unit.c").write_text("")
    inner = f"{' '.join(GATE)} {sys.executable} {HOG} 1 0.1 -c unit.c -o unit.o"
    env = gate_env(tmp_path / "gate", tmp_path, budget_mb=10, job_mb=10)
    subprocess.run([*GATE, "sh", "-c", inner, "-c", "unit.c"], cwd=tmp_path, env=env, check=True, timeout=60)
    assert [r["file"] for r in records(tmp_path / "gate")] == ["unit.c"]  # the outer one only


def test_ninja_starts_ties_in_file_order_and_the_wrapper_puts_the_heaviest_first(tmp_path: Path) -> None:
    build = hog_build(tmp_path, {"a": (1, 0.1), "b": (1, 0.1), "c": (1, 0.1)})
    gate_dir = tmp_path / "gate"
    env = gate_env(gate_dir, build, budget_mb=10_000, job_mb=1)
    subprocess.run([NINJA, "-j1"], cwd=build, env=env, check=True, capture_output=True)
    assert [r["file"] for r in records(gate_dir)] == ["a.c", "b.c", "c.c"]  # ninja alone: file order

    (gate_dir / "hints.json").write_text(json.dumps({"a.c": {"wall_s": 1, "peak_mb": 1},
                                                     "c.c": {"wall_s": 9, "peak_mb": 1}}))
    (gate_dir / "records.jsonl").unlink()
    for output in build.glob("*.o"):
        output.unlink()
    subprocess.run([*ORDER, "-j1"], cwd=build, env=env, check=True, capture_output=True)
    assert [r["file"] for r in records(gate_dir)] == ["c.c", "a.c", "b.c"]  # recorded, slowest first


def test_reorder_moves_build_blocks_only_within_runs() -> None:
    text = ("x = 1\nbuild a.o: cc a.c\n  flags = -O1\nbuild b.o: cc b.c | dep.h\n"
            "y = 2\nbuild c.o: cc c.c\nbuild d.o: cc d.c\n")
    walls = {"b.c": 5.0, "c.c": 1.0, "d.c": 2.0}
    assert reorder(text, Path("/src"), walls, "/src") == (
        "x = 1\nbuild b.o: cc b.c | dep.h\nbuild a.o: cc a.c\n  flags = -O1\n"
        "y = 2\nbuild d.o: cc d.c\nbuild c.o: cc c.c\n")


def compile_order(log: str) -> list[str]:
    """The kernel files in the order the build log shows them ([n/N] lines; -j1: start order)."""
    return [name for line in Path(log).read_text().splitlines() for name in ("cheap.cu", "costly.cu")
            if re.match(r"\s*\[\d+/\d+\] ", line) and f"/csrc/{name} " in line]


def test_a_build_records_its_costs_and_the_next_starts_the_heaviest_first(tmp_path: Path) -> None:
    cache, recipe = str(tmp_path / "cache"), str(COSTLY / "costly-ext.toml")
    first = builder_json("build", recipe, "--arch", "86", "--jobs", "1", "--no-install", "--cache", cache)
    assert compile_order(first["log"]) == ["cheap.cu", "costly.cu"]  # sorted, as setuptools passes them
    assert first["costs"]["files"] == 3  # the two nvcc compiles and the host compile of binding.cpp

    stats = builder_json("stats", "costly-ext", "--cache", cache)
    [latest] = stats
    slowest = [f["file"] for f in latest["slowest"]]
    assert sorted(slowest) == ["csrc/binding.cpp", "csrc/cheap.cu", "csrc/costly.cu"]
    assert slowest.index("csrc/costly.cu") < slowest.index("csrc/cheap.cu")
    assert latest["archs"] == ["86"] and latest["peak_mb"] > 0 and 0 < latest["core_use"] <= 1
    shown = run_builder("stats", "costly-ext", "--cache", cache)
    assert "csrc/costly.cu" in shown.stdout and "core use" in shown.stdout
    assert builder_json("stats", recipe, "--cache", cache) == stats  # the recipe's file names it as the build did

    again = builder_json("build", recipe, "--arch", "86", "--jobs", "1", "--no-install", "--force", "--cache", cache)
    assert compile_order(again["log"]) == ["costly.cu", "cheap.cu"]
    assert again["cache_key"] == first["cache_key"]
    missing = run_builder("stats", "nothing-built", "--cache", cache)
    assert missing.returncode == 2 and "no compile records for nothing-built" in missing.stderr


def recorded(*walls: tuple[str, float], unfinished: bool = False, reference: str = "") -> BuildCosts:
    """A record set of one kind (key "k"): each file's wall, CPU and peak alike."""
    return BuildCosts(key="k", recipe="r", version="1", archs=["86"], cuda="13.0", host="g++ 12", jobs=2, cores=2,
                      memory_budget_gb=8.0, unfinished=unfinished, reference=reference,
                      files=[FileCost(name, wall, wall, 100.0, start=0.0, end=wall) for name, wall in walls])


def walls(costs: BuildCosts | None) -> dict[str, float]:
    assert costs is not None
    return {name: float(hint["wall_s"]) for name, hint in costs.hints().items()}


def test_a_build_that_did_not_finish_keeps_the_records_of_the_files_it_did_not_reach(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    stored.save(cache, recorded(("a.cu", 10), ("b.cu", 20), ("c.cu", 30)))
    stored.save(cache, recorded(("a.cu", 12), unfinished=True))  # Ctrl-C after one file
    stopped = stored.load(cache, "k")
    assert stopped is not None and stopped.unfinished
    assert [f.file for f in stopped.files] == ["a.cu"] and stopped.summary()["wall_s"] == 12  # its own times
    assert walls(stopped) == {"a.cu": 12, "b.cu": 20, "c.cu": 30}
    assert describe(stopped).startswith("unfinished build, 2 more file(s) kept from the records before it")

    stored.save(cache, recorded(("b.cu", 21), unfinished=True))  # stopped again: nothing is lost either
    assert walls(stored.load(cache, "k")) == {"a.cu": 12, "b.cu": 21, "c.cu": 30}
    stored.save(cache, recorded(("a.cu", 11), ("c.cu", 29)))  # a finished build replaces them all
    assert walls(stored.load(cache, "k")) == {"a.cu": 11, "c.cu": 29}


def test_a_first_build_that_did_not_finish_takes_the_reference_for_the_rest(tmp_path: Path) -> None:
    cache, shipped = Cache(tmp_path / "cache"), recorded(("a.cu", 100), ("b.cu", 200), reference="an H100")
    assert stored.starting(cache, "k", shipped) is shipped
    stored.save(cache, recorded(("a.cu", 150), unfinished=True))
    assert walls(stored.starting(cache, "k", shipped)) == {"a.cu": 150, "b.cu": 200}
    stored.save(cache, recorded(("a.cu", 150), ("b.cu", 250)))
    assert walls(stored.starting(cache, "k", shipped)) == {"a.cu": 150, "b.cu": 250}


def test_a_compile_that_failed_or_was_stopped_is_no_record(tmp_path: Path) -> None:
    (tmp_path / "gate").mkdir()
    lines = [{"file": "a.cu", "wall_s": 9.0, "cpu_s": 9.0, "peak_mb": 500.0, "returncode": 0},
             {"file": "b.cu", "wall_s": 0.4, "cpu_s": 0.3, "peak_mb": 80.0, "returncode": 1},
             {"file": "c.cu", "wall_s": 2.0, "cpu_s": 1.9, "peak_mb": 300.0, "returncode": -2}]
    (tmp_path / "gate" / "records.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [f.file for f in gate_records(tmp_path)] == ["a.cu"]


def test_variants_change_the_key_the_local_version_and_the_files_compiled(tmp_path: Path) -> None:
    cache, recipe = str(tmp_path / "cache"), str(COSTLY / "costly-ext.toml")
    default = builder_json("plan", recipe, "--arch", "86", "--cache", cache)
    both = builder_json("plan", recipe, "--arch", "86", "--variant", "kernels=costly,cheap", "--cache", cache)
    assert both["cache_key"] == default["cache_key"] and both["variants"] == {}  # all of them: the default
    cheap = builder_json("plan", recipe, "--arch", "86", "--variant", "kernels=cheap", "--cache", cache)
    assert cheap["cache_key"] != default["cache_key"] and cheap["variants"] == {"kernels": "cheap"}
    assert cheap["local_version"] == label("86", variants=("kernelscheap",))
    assert cheap["env"]["COSTLY_KERNELS"] == "cheap"

    venv = make_venv(tmp_path / "venv")
    built = builder_json("build", recipe, "--arch", "86", "--variant", "kernels=cheap", "--variant", "tag=marked",
                         "--python", str(venv), "--cache", cache)
    assert built["plan"]["local_version"] == label("86", variants=("kernelscheap", "tagmarked"))
    assert compile_order(built["log"]) == ["cheap.cu"]
    tag = subprocess.run([venv, "-c", "import torch, costly_ext; print(costly_ext.tag())"],
                         capture_output=True, text=True)
    assert tag.stdout.strip() == "2", tag.stderr  # the variant's define reached the compiler
    costly = subprocess.run([venv, "-c", "import torch, costly_ext; costly_ext.costly(torch.ones(1))"],
                           capture_output=True, text=True)
    assert "built without the costly kernel (variant kernels=cheap)" in costly.stderr

    for bad, message in [("kernels=huge", "variant kernels: huge not among cheap, costly (or all)"),
                         ("nope=1", "costly-ext has no variant 'nope' (its variants: kernels, tag)"),
                         ("kernels", "--variant 'kernels': expected NAME=VALUE")]:
        result = run_builder("plan", recipe, "--arch", "86", "--variant", bad, "--cache", cache)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2


def test_the_gpu_check_is_told_the_variants_built() -> None:
    reads = "import json, os; assert json.loads(os.environ['BUILDER_VARIANTS']) == {'hdims': '32,256'}"
    run_gpu_check(Path(sys.executable), reads, {"hdims": "32,256"})
    with pytest.raises(VerifyError, match="GPU check failed: AssertionError"):
        run_gpu_check(Path(sys.executable), reads, {})


def test_sccache_recompiles_only_the_changed_file(tmp_path: Path) -> None:
    source = tmp_path / "costly"
    shutil.copytree(COSTLY, source)
    cache, recipe = str(tmp_path / "cache"), str(source / "costly-ext.toml")
    env, calls = wrappers_on_path(tmp_path)  # the user's ccache, sccache and SCCACHE_DIR: never builder's
    first = builder_json("build", recipe, "--arch", "86", "--ccache", "--no-install", "--cache", cache, env=env)
    assert first["sccache"]["misses"].get("CUBIN") == 2 and not first["sccache"]["hits"].get("CUBIN")
    assert first["sccache"]["misses"].get("C/C++") == 1  # the host compile too, through builder's sccache
    assert not calls.exists() and not (tmp_path / "user-sccache").exists()
    cheap = source / "csrc" / "cheap.cu"
    cheap.write_text(cheap.read_text().replace("2.f * x[i]", "3.f * x[i]"))
    second = builder_json("build", recipe, "--arch", "86", "--ccache", "--no-install", "--cache", cache, env=env)
    assert second["cache_key"] != first["cache_key"]  # a new source, so a new build
    # sccache (>= 0.8) splits each nvcc call into steps; the costly one, ptxas's CUBIN, is a miss for
    # cheap.cu alone; binding.cpp's host compile hits (the nvcc driver and PTX steps count as misses
    # on every call: measured with sccache 0.16).
    assert second["sccache"]["misses"].get("CUBIN") == 1, second["sccache"]
    assert second["sccache"]["hits"].get("CUBIN") == 1 and second["sccache"]["hits"].get("C/C++") == 1
