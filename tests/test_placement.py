"""Where a farm build's steps ran (builder/building/placement.py), read from sccache 0.16 server
log lines as a loopback farm build wrote them (tests/test_farm.py builds through a real farm),
and records without those fields, or with fields this builder does not know, still loading."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from builder.building.costs import BuildCosts, FileCost
from builder.building.placement import keep_warnings, on_farm, where_steps_ran

ONE, TWO = "127.0.0.1:10712", "127.0.0.1:10713"


def result(step: str, kind: str = "cache miss") -> str:
    return f"[2026-12-06T23:52:14.047Z DEBUG sccache::server] [{step}]: compile result: {kind}"


def stats(**dist: int) -> str:
    counts = ", ".join(f'"127.0.0.1:{port[1:]}": {n}' for port, n in dist.items())
    return ("[2026-12-06T23:52:14.333Z DEBUG sccache::server] stats after compile result: ServerStats { "
            "compile_requests: 6, cache_misses: PerLanguageCount { counts: {\"CUDA (Device code)\": 3}, adv_counts: "
            f"{{\"cuda [cudafe++]\": 3}} }}, not_cached: {{}}, dist_compiles: {{{counts}}}, dist_errors: 0, "
            "multi_level: None }")


def fell_back(step: str) -> str:
    return (f"[2026-12-06T23:51:03.848Z WARN  sccache::compiler::compiler] [{step}]: Could not perform distributed "
            "compile, falling back to local: Error 500: {\"description\":\"assign job failed, job un-assigned from "
            "the server\",\"cause\":{\"description\":\"error sending request for url "
            "(https://127.0.0.1:10713/api/v1/distserver/assign_job/19)\"}}")


# The end of a real build's log: each stats line shows the counts before its own step's server.
LOG = [
    "[2026-12-06T23:52:07.327Z DEBUG sccache::server] check_compiler: Supported compiler",
    result("vec_add.cubin"), stats(p10712=6, p10713=3),
    result("vec_sum.cubin"), stats(p10712=7, p10713=3),
    "[2026-12-06T23:52:25.767Z DEBUG sccache::server] [vec_sum.cubin]: Cache write finished in 0.000 s",
    result("vec_add.o"), stats(p10712=7, p10713=4),
    result("vec_sum.o", "not cacheable"),  # the outer nvcc calls: run here, never on the farm
    result("vec_add.o", "not cacheable"),
    result("binding.o", "cache hit"),
    fell_back("vec_sum.ptx"),
    result("vec_sum.ptx"), stats(p10712=8, p10713=4),
    result("binding.o"), stats(p10712=8, p10713=4),
]


def test_each_step_gets_the_server_its_stats_line_adds() -> None:
    remote, back = where_steps_ran(LOG, {ONE: 9, TWO: 4})
    assert remote == {"vec_add.cubin": Counter({ONE: 1}), "vec_sum.cubin": Counter({TWO: 1}),
                      "vec_add.o": Counter({ONE: 1}), "binding.o": Counter({ONE: 1})}
    assert back == Counter({"vec_sum.ptx": 1})  # compiled here: no server added after it


def test_a_failed_step_beside_another_leaves_both_unplaced() -> None:
    log = [result("a.ptx"), stats(p10712=1), result("b.ptx", "compile failed"),
           result("c.ptx"), stats(p10712=2, p10713=1)]
    remote, _ = where_steps_ran(log, {ONE: 3, TWO: 1})
    assert set(remote) == {"c.ptx"}  # a.ptx and b.ptx shared two servers: which one ran which is unknown


def costs(*files: str) -> BuildCosts:
    return BuildCosts(key="k-farm", recipe="r", version="1", archs=["86"], cuda="13.0", host="g++ 12", jobs=4,
                      cores=2, memory_budget_gb=8, files=[FileCost(f, 1.0, 0.1, 20.0) for f in files], farm="http://s")


def test_steps_go_to_the_file_of_their_name(tmp_path: Path) -> None:
    log = tmp_path / "sccache-server.log"
    log.write_text("\n".join([
        result("vec_add.module_id"), stats(),
        result("vec_add.compute_86.ptx"), stats(p10712=1),
        result("foo.bar.cubin"), stats(p10712=2),
        result("foo.cubin"), stats(p10712=2, p10713=1),
        result("k.cubin"), stats(p10712=3, p10713=1),
        fell_back("vec_add.o"), result("vec_add.o"), stats(p10712=3, p10713=2),
    ]) + "\n")
    placed = on_farm(costs("csrc/vec_add.cu", "csrc/foo.bar.cu", "foo.cu", "a/k.cu", "b/k.cu"), log, {ONE: 3, TWO: 3})
    assert placed is not None
    ran = {f.file: (f.remote, f.local_fallback) for f in placed.files}
    assert ran == {"csrc/vec_add.cu": ({ONE: 2, TWO: 1}, 1), "csrc/foo.bar.cu": ({TWO: 1}, 0),
                   "foo.cu": ({ONE: 1}, 0), "a/k.cu": ({}, 0), "b/k.cu": ({}, 0)}  # two k.cu: steps of either
    assert placed.files[0].ran_on() == f"2 on {ONE}, 1 on {TWO}, 1 here (the farm failed it)"
    assert on_farm(costs("x.cu"), tmp_path / "absent.log", {}) == costs("x.cu")


def test_records_old_and_new_load() -> None:
    old = {"file": "csrc/a.cu", "start": 1.0, "end": 2.0, "wall_s": 1.0, "cpu_s": 1.0, "peak_mb": 10.0,
           "threads": 1, "expected_mb": 5.0, "basis": "record", "waited_s": 0.0, "returncode": 0}
    assert FileCost.from_json(old).remote == {} and FileCost.from_json(old).local_fallback == 0
    newer = FileCost.from_json({**old, "remote": {ONE: 2}, "local_fallback": 1, "a_later_field": True})
    assert (newer.remote, newer.local_fallback) == ({ONE: 2}, 1)
    data = costs("csrc/a.cu").to_json()
    data["files"][0].pop("remote")
    assert BuildCosts.from_json(data).files[0].remote == {}


def test_why_the_farm_failed_a_step_outlives_the_work_directory(tmp_path: Path) -> None:
    log, kept = tmp_path / "sccache-server.log", tmp_path / "build.sccache.log"
    log.write_text("\n".join(LOG) + "\n")
    kept.write_text("earlier\n")
    keep_warnings(log, kept)
    assert kept.read_text() == f"earlier\n{fell_back('vec_sum.ptx')}\n"
