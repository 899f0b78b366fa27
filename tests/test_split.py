"""Split compilation and reference costs: the gate's decisions (which file gets nvcc's
--split-compile, with how many threads, what it admits) from records fed in, the device code
with and without the split (real nvcc and cuobjdump), the toolkits that have the option, and a
real build of the costly fixture starting from reference costs exported by `builder stats`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.building import reference
from builder.building.costs import BuildCosts, FileCost
from builder.building.gate import (
    MIN_SPLIT_SECONDS,
    RECORD_MARGIN,
    SHIPPED_SPLIT_SECONDS,
    Admission,
    expected_mb,
    is_nvcc,
    local_mb,
    shipped_threads,
    split_threads,
    splits_already,
)
from builder.building.ninja_order import add_planned, gate_nvcc, planned, reorder, weights
from builder.building.sccache import describe
from builder.errors import RecipeError
from builder.planning.toolchain import splits_compiles
from tests.conftest import FIXTURES, ROOT, builder_json, run_builder
from tests.test_costs import compile_order

COSTLY = FIXTURES / "costly"
NVCC_13 = Path("/usr/local/cuda/bin/nvcc")
DEBIAN_NVCC_11_8 = Path("/usr/bin/nvcc")


# -- which file is split, and how far ------------------------------------------------------------

def test_fewer_files_than_cores_share_the_idle_cores_by_their_work() -> None:
    # flash-attn's hdims=128 fp16 forward subset on the H200: 4 kernel files on 16 cores.
    assert split_threads(300, [300, 300, 300], [], 16) == 4
    assert split_threads(300, [300, 300], [(4, 280)], 16) == 4
    assert split_threads(300, [], [(4, 280), (4, 280), (4, 280)], 16) == 4
    # Unequal work, unequal shares: 16 * 200/400 = 8 of them, then 8 left for two.
    assert split_threads(200, [100, 100], [], 16) == 8
    assert split_threads(100, [100], [(8, 190)], 16) == 4


def test_a_file_that_would_end_the_build_alone_is_split_even_with_no_idle_core() -> None:
    # causal-conv1d on 2 cores: causal_conv1d_bwd.cu is 515 of the 531 s.
    assert split_threads(515, [10, 4, 2], [], 2) == 2
    assert split_threads(10, [4, 2], [(2, 500)], 2) == 1  # the others: no idle core, not critical
    # Late in a 16-core build: 15 compiles with little left, a long file starts.
    # (400 + 450) / 16 is 53 s, but 4 threads bring it to 0.69 x 400 s, and more were never measured to.
    assert split_threads(400, [], [(1, 30)] * 15, 16) == 4
    assert split_threads(400, [], [(1, 300)] * 15, 16) == 2  # 0.75 x 400 s: about the others' end
    assert split_threads(400, [], [(1, 400)] * 15, 16) == 1  # ends with them unsplit


def test_the_hdims_128_subset_splits_the_files_that_set_its_end() -> None:
    """flash-attn 2.8.3.post2 --variant hdims=128 for sm_90 on 16 cores, heaviest first from the
    shipped costs: the two fwd_split files (277, 269 CPU-s) would end the build alone even on 2
    threads (0.75x), so they get 4 (0.69x: 191 s, the build's end); the bwd files (228 CPU-s) reach
    it on 2, the rest on 1."""
    shipped = reference.read(ROOT / "recipes" / "costs" / "flash-attn-2.8.3.post2.json")
    measured = reference.choose(shipped["measurements"], ["90"], "13.0")
    assert measured is not None
    work = sorted((cost.cpu_s for cost in reference.scaled(measured, 1)
                   if "hdim128_" in cost.file or cost.file.endswith(".cpp")), reverse=True)
    running: list[tuple[int, float]] = []
    for n, mine in enumerate(work):
        running.append((split_threads(mine, work[n + 1:], running, 16), mine))
    assert [threads for threads, _ in running] == [4, 4, 2, 2] + [1] * 9


def test_a_full_build_with_more_files_than_cores_splits_nothing_at_the_start() -> None:
    # flash-attn whole, sm_90: 73 files, the heaviest near 400 CPU-s, 17,826 CPU-s in all on 16 cores.
    assert split_threads(400, [300] * 40 + [200] * 32, [], 16) == 1


def test_short_files_one_core_and_unknown_costs() -> None:
    assert split_threads(MIN_SPLIT_SECONDS - 1, [], [], 16) == 1  # too short to be worth threads
    assert split_threads(1000, [], [], 1) == 1
    assert split_threads(None, [None, None, None], [], 16) == 4  # nothing recorded: alike
    assert split_threads(None, [], [], 8) == 8  # the only file of the build
    assert split_threads(None, [100.0], [], 4) == 2  # unrecorded: the mean of the recorded
    # Only a recorded cost makes a file critical: the last of three unrecorded files on 2 cores.
    assert split_threads(None, [], [(1, None)], 2) == 1
    assert split_threads(100, [], [(1, None)], 2) == 1  # beside one of unknown cost, taken as the mean
    assert split_threads(100, [], [(1, 20)], 2) == 2  # beside one nearly done
    assert split_threads(100, [], [(1, 300)], 2) == 1


def test_only_nvcc_compiles_not_already_split_are_split() -> None:
    assert is_nvcc(["/usr/local/cuda/bin/nvcc", "-c", "a.cu"])
    assert is_nvcc(["/x/sccache", "/usr/local/cuda/bin/nvcc", "-c", "a.cu"])
    assert not is_nvcc(["/usr/bin/g++", "-c", "a.cpp"]) and not is_nvcc(["g++", "-c", "nvcc"])
    assert splits_already(["nvcc", "--split-compile", "4", "-c", "a.cu"], {})
    assert splits_already(["nvcc", "-split-compile=2", "-c", "a.cu"], {})
    assert splits_already(["nvcc", "-c", "a.cu"], {"NVCC_APPEND_FLAGS": "--split-compile 4"})
    assert not splits_already(["nvcc", "--threads", "2", "-c", "a.cu"], {"NVCC_APPEND_FLAGS": "-O3"})


# -- what the gate admits ------------------------------------------------------------------------

def hints(**files: tuple[float, float]) -> dict[str, dict[str, float | int | str]]:
    """file (with "_" for "/" and "__" for ".") -> (CPU seconds, peak MB), recorded unsplit."""
    return {name.replace("__", ".").replace("_", "/"): {"cpu_s": cpu, "wall_s": cpu, "peak_mb": peak,
                                                         "threads": 1, "basis": "record"}
            for name, (cpu, peak) in files.items()}


def admission(tmp_path: Path, file: str, fed: dict, *, budget_mb: float, cores: int, split: str = "load",
              planned_files: list[str] | None = None) -> Admission:
    (tmp_path / "hints.json").write_text(json.dumps(fed))
    if planned_files is not None:
        (tmp_path / "planned.json").write_text(json.dumps(planned_files))
    return Admission(tmp_path, file, budget_mb=budget_mb, default_mb=1000, cores=cores, split=split)


def test_the_gate_gives_the_long_file_the_threads_that_fit_in_the_memory_budget(tmp_path: Path) -> None:
    fed = hints(src_bwd__cu=(500, 2000), src_fwd__cu=(20, 1000), src_api__cpp=(15, 800))
    files = ["src/bwd.cu", "src/fwd.cu", "src/api.cpp"]
    roomy = admission(tmp_path, "src/bwd.cu", fed, budget_mb=100_000, cores=4, planned_files=files)
    threads, need, basis = roomy.decide({}, now=0.0) or (0, 0.0, "")
    assert threads == 4 and basis == "record"  # 3 files on 4 cores, and it is most of the work
    assert need == pytest.approx(expected_mb(fed["src/bwd.cu"], 1000, 4)[0])
    assert need == pytest.approx(2000 * RECORD_MARGIN * 2.0)  # 1 + 0.5 * log2(4)

    # 5,000 MB beside a compile holding 1,500 MB: 4 threads (4,600 MB) and 3 (4,123 MB) do not fit,
    # 2 (2000 * 1.15 * 1.5 = 3,450 MB) do.
    tight = admission(tmp_path, "src/bwd.cu", fed, budget_mb=5000, cores=4, planned_files=files)
    running = {"1": {"mb": 1500, "threads": 1, "file": "src/api.cpp", "start": 0.0, "work": 15}}
    assert tight.decide(running, now=1.0) == (2, pytest.approx(3450), "record")
    # Not even unsplit beside 3,000 MB: wait.
    assert tight.decide({"1": {**running["1"], "mb": 3000}}, now=1.0) is None


def test_without_split_permission_or_a_planned_list_the_gate_does_not_split(tmp_path: Path) -> None:
    fed = hints(src_bwd__cu=(500, 2000), src_fwd__cu=(20, 1000))
    off = admission(tmp_path, "src/bwd.cu", fed, budget_mb=100_000, cores=4, split="off")
    assert off.decide({}, now=0.0) == (1, pytest.approx(2000 * RECORD_MARGIN), "record")
    empty = tmp_path / "empty"
    empty.mkdir()
    blind = Admission(empty, "src/bwd.cu", budget_mb=100_000, default_mb=1000, cores=4, split="load")
    assert blind.decide({}, now=0.0) == (1, 1000, "estimate")  # nothing says what else compiles


def test_through_sccache_the_split_follows_the_shipped_costs_alone(tmp_path: Path) -> None:
    """The same threads whatever the load, the cores or the memory (the gate waits instead): through
    sccache the thread count is in the steps' keys, and every build sharing the store must agree."""
    shipped = {name: {**hint, "basis": "reference"} for name, hint in
               hints(src_bwd__cu=(SHIPPED_SPLIT_SECONDS, 2000), src_fwd__cu=(SHIPPED_SPLIT_SECONDS - 1, 1000),
                     src_long__cu=(2 * SHIPPED_SPLIT_SECONDS, 3000)).items()}
    files = ["src/bwd.cu", "src/fwd.cu", "src/long.cu"]
    alone = admission(tmp_path, "src/bwd.cu", shipped, budget_mb=100_000, cores=16, split="shipped",
                      planned_files=files)
    assert alone.decide({}, now=0.0) == (2, pytest.approx(2000 * RECORD_MARGIN * 1.5), "reference")
    busy = {str(n): {"mb": 100, "threads": 1, "file": "x.cu", "start": 0.0, "work": 500} for n in range(1, 16)}
    assert alone.decide(busy, now=1.0)[:1] == (2,)  # no idle core: still 2 (the load would say 1)
    assert shipped_threads(shipped["src/fwd.cu"]) == 1 and shipped_threads(shipped["src/long.cu"]) == 4
    # Short of memory for 2 threads: it waits rather than start on 1 (a key no other build has).
    tight = admission(tmp_path, "src/bwd.cu", shipped, budget_mb=3000, cores=16, split="shipped")
    assert tight.decide({"1": {"mb": 500, "threads": 1, "file": "x.cu", "start": 0.0, "work": 5}}, now=1.0) is None
    # A build's own records (another machine's numbers) never split through sccache.
    assert shipped_threads(hints(src_bwd__cu=(1000, 2000))["src/bwd.cu"]) == 1
    assert shipped_threads(None) == 1


def test_on_a_farm_the_gate_counts_the_heaviest_compiles_one_per_local_core(tmp_path: Path) -> None:
    """sccache runs at most one process per core here (its jobserver), so on a farm the memory the
    running compiles can hold here is that of the heaviest `cores` of them, however many run."""
    fed = hints(**{f"k{n}__cu": (100, 4000) for n in range(6)})
    running = {str(n): {"mb": 4000 * RECORD_MARGIN, "threads": 1, "file": f"k{n}.cu", "start": 0.0, "work": 100}
               for n in range(1, 5)}
    here = admission(tmp_path, "k5.cu", fed, budget_mb=10_000, cores=2, split="off")
    assert here.decide(running, now=1.0) is None  # 5 x 4,600 MB counted: wait
    farm = Admission(tmp_path, "k5.cu", budget_mb=10_000, default_mb=1000, cores=66, split="off", local_slots=2)
    assert farm.decide(running, now=1.0) == (1, pytest.approx(4600), "record")  # 2 x 4,600 MB at most here
    # Still bounded: one compile whose peak is more than the budget beside another waits.
    big = Admission(tmp_path, "k5.cu", budget_mb=5000, default_mb=1000, cores=66, split="off", local_slots=2)
    assert big.decide(running, now=1.0) is None
    assert local_mb([1, 5, 3, 4], 2) == 9 and local_mb([1, 5, 3, 4], None) == 13


def test_files_already_compiled_or_running_are_not_pending(tmp_path: Path) -> None:
    fed = hints(a__cu=(100, 100), b__cu=(100, 100), c__cu=(100, 100), d__cu=(100, 100))
    gate = admission(tmp_path, "d.cu", fed, budget_mb=100_000, cores=4, planned_files=["a.cu", "b.cu", "c.cu", "d.cu"])
    (tmp_path / "records.jsonl").write_text(json.dumps({"file": "a.cu"}) + "\n")
    running = {"1": {"mb": 100, "threads": 1, "file": "b.cu", "start": 0.0, "work": 100}}
    assert gate.pending(running) == ["c.cu"]
    # b.cu ran 60 of its 100 s on 1 thread; d.cu and c.cu share the 3 free cores (1.5 each: 2 for
    # the first to start), but d.cu's 100 s would end the build alone: it can end no sooner than
    # 0.69 x 100 s on 4 threads, after (100 + 100 + 40) / 4 cores, which 2 threads (75 s) miss.
    assert gate.threads(running, now=60.0) == 4


def test_a_split_record_predicts_the_same_split_and_scales_to_another() -> None:
    hint = {"peak_mb": 3000, "threads": 2, "basis": "reference"}
    assert expected_mb(hint, 500, 2) == (pytest.approx(3000 * RECORD_MARGIN), "reference")
    assert expected_mb(hint, 500, 1)[0] == pytest.approx(3000 * RECORD_MARGIN / 1.5)
    assert expected_mb(None, 500, 1) == (500, "estimate")


# -- the ordering ninja: gate in front of nvcc, heaviest first, the planned list ----------------

TORCH_2_0_NINJA = """ninja_required_version = 1.3
cxx = /work/tools/host/g++
nvcc = /usr/bin/nvcc

cuda_cflags = -O2
rule compile
  command = $cxx -MMD -MF $out.d $cflags -c $in -o $out $post_cflags
rule cuda_compile
  command = $nvcc  $cuda_cflags -c $in -o $out $cuda_post_cflags

build /src/build/a.o: compile /src/csrc/binding.cpp
build /src/build/b.o: cuda_compile /src/csrc/cheap.cu
build /src/build/c.o: cuda_compile /src/csrc/costly.cu
"""


def test_the_ordering_ninja_puts_the_gate_in_front_of_a_bare_nvcc() -> None:
    gated = gate_nvcc(TORCH_2_0_NINJA, "/work/tools/gate")
    assert "nvcc = /work/tools/gate /usr/bin/nvcc\n" in gated
    assert gate_nvcc(gated, "/work/tools/gate") == gated  # once only
    with_sccache = gate_nvcc(TORCH_2_0_NINJA, "/work/tools/gate /venv/bin/sccache")
    assert "nvcc = /work/tools/gate /venv/bin/sccache /usr/bin/nvcc\n" in with_sccache
    assert "cxx = /work/tools/host/g++" in gated and gated.count("/work/tools/gate") == 1


def test_the_ordering_ninja_lists_the_planned_sources_and_weighs_them_by_cpu() -> None:
    assert planned(TORCH_2_0_NINJA, Path("/src/build"), "/src") == ["csrc/binding.cpp", "csrc/cheap.cu",
                                                                     "csrc/costly.cu"]
    # A split file's wall shrinks; its CPU seconds keep it first.
    fed = {"csrc/costly.cu": {"wall_s": 40, "cpu_s": 150}, "csrc/binding.cpp": {"wall_s": 60, "cpu_s": 60}}
    ordered = reorder(TORCH_2_0_NINJA, Path("/src/build"), weights(fed), "/src")
    assert planned(ordered, Path("/src/build"), "/src") == ["csrc/costly.cu", "csrc/binding.cpp",
                                                            "csrc/cheap.cu"]


def test_each_ninja_run_adds_its_sources_to_the_planned_ones(tmp_path: Path) -> None:
    """Extensions built at once run their ninjas side by side: the last one must not hide the others'
    files from the gate's split decisions."""
    add_planned(tmp_path, ["a/one.cu", "a/two.cu"])
    add_planned(tmp_path, ["b/three.cu", "a/two.cu"])
    assert json.loads((tmp_path / "planned.json").read_text()) == ["a/one.cu", "a/two.cu", "b/three.cu"]


# -- nvcc: which toolkits have it, and the device code with and without it -----------------------

def test_nvcc_13_has_split_compile_and_debian_11_8_does_not() -> None:
    assert splits_compiles(NVCC_13)
    if not DEBIAN_NVCC_11_8.is_file():
        pytest.skip("Debian's CUDA 11.8 is not installed (make toolchain-11.8)")
    assert not splits_compiles(DEBIAN_NVCC_11_8)
    plan = builder_json("plan", str(COSTLY / "costly-ext.toml"), "--arch", "86", "--cuda", "11.8", "--torch", "2.0.1")
    assert plan["split_compile"] is False


def cuobjdump() -> str:
    found = shutil.which("cuobjdump", path=os.pathsep.join([
        str(NVCC_13.parent), *(str(p / "triton" / "backends" / "nvidia" / "bin") for p in map(Path, sys.path))]))
    if found is None:
        pytest.skip("no cuobjdump (triton ships one beside torch)")
    return found


def test_split_compilation_leaves_the_device_code_unchanged(tmp_path: Path) -> None:
    """costly.cu for sm_86 with and without --split-compile 2: the same SASS, so the split is no part
    of the cache key. (The object files differ even between two plain compiles: nvcc names internal
    symbols with a per-compile number, /work/shared/DESIGN.md.)"""
    listings = []
    for extra in ([], ["--split-compile", "2"]):
        out = tmp_path / f"costly{len(extra)}.o"
        subprocess.run([str(NVCC_13), "-O2", "-gencode", "arch=compute_86,code=sm_86", "-c",
                        str(COSTLY / "csrc" / "costly.cu"), "-o", str(out), *extra], check=True, timeout=900)
        sass = subprocess.run([cuobjdump(), "-sass", str(out)], capture_output=True, text=True, check=True)
        listings.append(sass.stdout)
    assert listings[0].count("poly_kernel") > 100 and listings[0] == listings[1]


# -- reference costs: choice and scaling ---------------------------------------------------------

def measurement(archs: list[str], cuda: str, cpu: float) -> dict:
    return {"archs": archs, "cuda": cuda, "files": [
        {"file": "csrc/k.cu", "wall_s": cpu, "cpu_s": cpu, "peak_mb": 900.0, "threads": 1},
        {"file": "csrc/api.cpp", "wall_s": 30.0, "cpu_s": 30.0, "peak_mb": 700.0, "threads": 1}]}


def test_a_build_takes_the_reference_of_its_toolkit_major_and_nearest_archs() -> None:
    found = [measurement(["90"], "12.8.1", 10), measurement(["86"], "13.0.88", 20),
             measurement(["80", "90"], "13.0.88", 40)]
    assert reference.choose(found, ["86"], "13.0.88") is found[1]
    assert reference.choose(found, ["90"], "13.0.88") is found[1]  # nearest count of its major
    assert reference.choose(found, ["80", "90"], "13.0.88") is found[2]
    assert reference.choose(found, ["90"], "12.4.0") is found[0]
    assert reference.choose(found[1:], ["90"], "11.8.89") is found[1]  # no measurement of its major: any
    assert reference.choose([], ["90"], "13.0.88") is None


def test_reference_device_costs_scale_with_the_number_of_archs_and_peaks_do_not() -> None:
    four = {f.file: f for f in reference.scaled(measurement(["80", "90", "100", "120"], "13.0.88", 400), 1)}
    assert four["csrc/k.cu"].cpu_s == 100 and four["csrc/k.cu"].wall_s == 100
    assert four["csrc/k.cu"].peak_mb == 900 and four["csrc/k.cu"].basis == "reference"
    assert four["csrc/api.cpp"].cpu_s == 30  # a host compile does not depend on the archs
    two = {f.file: f for f in reference.scaled(measurement(["86"], "13.0.88", 100), 2)}
    assert two["csrc/k.cu"].cpu_s == 200


def test_export_adds_a_measurement_per_archs_and_toolkit_major(tmp_path: Path) -> None:
    def costs(archs: list[str], cuda: str, cpu: float, recipe: str = "k") -> BuildCosts:
        return BuildCosts(key="x", recipe=recipe, version="1.0", archs=archs, cuda=cuda, host="g++ 12", jobs=2,
                          cores=2, memory_budget_gb=10, files=[FileCost("csrc/k.cu", cpu, cpu, 900.0, threads=2)])
    path = tmp_path / "costs" / "k-1.0.json"
    reference.export(costs(["86"], "13.0.88", 10), path)
    reference.export(costs(["90"], "13.0.88", 20), path)
    reference.export(costs(["86"], "13.1.0", 30), path)  # same archs and major: replaces the first
    data = json.loads(path.read_text())
    assert [(m["archs"], m["cuda"], m["files"][0]["cpu_s"]) for m in data["measurements"]] == [
        (["90"], "13.0.88", 20), (["86"], "13.1.0", 30)]
    assert data["measurements"][0]["files"][0] == {"file": "csrc/k.cu", "wall_s": 20, "cpu_s": 20, "peak_mb": 900.0,
                                                   "threads": 2}
    with pytest.raises(RecipeError, match=r"holds costs of k 1\.0, not other 1\.0"):
        reference.export(costs(["86"], "13.0.88", 10, recipe="other"), path)


# -- a real build: records exported, then a fresh cache starting from them ------------------------

def test_a_fresh_cache_builds_heaviest_first_and_splits_from_exported_reference_costs(tmp_path: Path) -> None:
    # The recipe in a folder of its own (its costs/ beside it), the source tree elsewhere, unchanged.
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (COSTLY / "costly-ext.toml").read_text()
    (recipes / "costly-ext.toml").write_text(text.replace('{ path = "." }', f'{{ path = "{COSTLY}" }}'))
    recipe = str(recipes / "costly-ext.toml")
    first = builder_json("build", recipe, "--arch", "86", "--jobs", "2", "--no-install", "--no-split-compile",
                         "--cache", str(tmp_path / "cache1"))
    assert first["costs"]["files"] == 3 and first["plan"]["split_mode"] == "off"
    [plain] = builder_json("stats", "costly-ext", "--cache", str(tmp_path / "cache1"))
    assert {f["threads"] for f in plain["slowest"]} == {1} and {f["basis"] for f in plain["slowest"]} == {"estimate"}
    costs_file = recipes / "costs" / "costly-ext-0.1.0.json"
    exported = builder_json("stats", "costly-ext", "--export", str(costs_file), "--cache", str(tmp_path / "cache1"))
    assert exported["files"] == 3 and exported["archs"] == ["86"]
    data = json.loads(costs_file.read_text())
    [measured] = data["measurements"]
    assert {f["file"] for f in measured["files"]} == {"csrc/binding.cpp", "csrc/cheap.cu", "csrc/costly.cu"}
    assert all(f["peak_mb"] > 0 and f["cpu_s"] > 0 for f in measured["files"])

    # As if measured on a slower machine: costly.cu is most of the build's work there (cheap.cu is
    # below the gate's MIN_SPLIT_SECONDS whatever the load does to the others' times).
    for f in measured["files"]:
        f["cpu_s"] = {"csrc/costly.cu": 300.0, "csrc/cheap.cu": 10.0}.get(f["file"], 30.0)
    costs_file.write_text(json.dumps(data))
    fresh = run_builder("build", recipe, "--arch", "86", "--jobs", "2", "--no-install",
                        "--cache", str(tmp_path / "cache2"), check=True)
    assert "starting from the recipe's reference costs (costly-ext-0.1.0.json: sm_86, CUDA 13.0" in fresh.stderr
    assert "split: csrc/costly.cu on 2 threads" in fresh.stderr
    result = builder_json("build", recipe, "--arch", "86", "--no-install", "--cache", str(tmp_path / "cache2"))
    assert result["cache_hit"] and result["cache_key"] == first["cache_key"]  # the split is not in the key
    assert compile_order(str(next((tmp_path / "cache2" / "logs").glob("costly-ext-*.log")))) == ["costly.cu",
                                                                                                  "cheap.cu"]
    [latest] = builder_json("stats", "costly-ext", "--top", "5", "--cache", str(tmp_path / "cache2"))
    by_file = {f["file"]: f for f in latest["slowest"]}
    assert {f["basis"] for f in by_file.values()} == {"reference"}  # admitted by the shipped peaks
    assert by_file["csrc/costly.cu"]["threads"] == 2  # 300 of 340 CPU-s on 2 cores: split over both
    assert by_file["csrc/cheap.cu"]["threads"] == 1 and by_file["csrc/binding.cpp"]["threads"] == 1

    # Through a shared compile cache the split follows the shipped costs alone (costly.cu's 300 CPU-s:
    # 2 threads, whatever the load), so a build from another fresh cache finds every step in the
    # store, the split file's cicc and ptxas steps too (their keys hold the thread count).
    shared = ("build", recipe, "--arch", "86", "--no-install", "--force",
              "--compile-cache", str(tmp_path / "compile-store"))
    cold = builder_json(*shared, "--cache", str(tmp_path / "cache3"))
    warm = builder_json(*shared, "--cache", str(tmp_path / "cache4"))
    assert cold["plan"]["split_mode"] == "shipped" and cold["sccache"]["misses"].get("CUBIN") == 2
    assert cold["sccache"]["split"] == warm["sccache"]["split"] == {"csrc/costly.cu": 2}
    # The device steps, the split file's too; the host compile of nvcc's .cudafe1.cpp may miss in a
    # local store (its temp dir's name: bench/RESULTS.md 2026-12-03), whatever the split.
    assert {kind: warm["sccache"]["hits"].get(kind) for kind in ("PTX", "CUBIN")} == {"PTX": 2, "CUBIN": 2}
    assert not {"PTX", "CUBIN"} & set(warm["sccache"]["misses"])
    assert warm["cache_key"] == first["cache_key"]
    assert "split as the recipe's shipped costs say (alike in every build sharing the store): " \
           "csrc/costly.cu on 2 threads" in describe(warm["sccache"])
