"""builder's benchmarks on this machine: each a measured ratio, appended to bench/RESULTS.md with
the command that produced it.

    python bench/run.py                 # fixture: cold vs cache hit, orchestration overhead
    python bench/run.py --upstream      # + causal-conv1d for one arch and flash-attn one arch vs four
    python bench/run.py --upstream --baseline   # + plain pip wheel of causal-conv1d, default archs (~1 h)
    python bench/run.py --sccache       # + causal-conv1d under --ccache: cold, then a warm rebuild
    python bench/run.py --split         # + causal-conv1d sm_86, --jobs 2, without and with split compiles
    python bench/run.py --compile-cache --only   # fixture: cold vs from a compile cache on S3 (moto, loopback)
    python bench/run.py --farm --only   # fixture: local vs a loopback farm of two 1-core servers (per-file overhead)
    python bench/run.py --overheads --only   # the gate's sampling CPU; retagging a wheel with a large library

Every build here runs in a fresh cache under a temporary directory, with sources copied from
cache/sources (fetched first with `builder fetch`), so nothing is a hit unless it should be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from measure import append_results, measure  # noqa: E402

from builder.building.patching import apply_patches  # noqa: E402
from builder.building.source import extract  # noqa: E402
from builder.planning.recipe import Patch, load_recipe  # noqa: E402
from builder.resources import shipped_dir  # noqa: E402
from tests.conftest import make_venv  # noqa: E402
from tests.test_upstream import trimmed_flash_attn  # noqa: E402

FIXTURE_RECIPE = ROOT / "tests" / "fixtures" / "torchext" / "fixture-ext.toml"


def builder(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder", *args]


def timed_build(cache: Path, *args: str) -> tuple[dict[str, object], dict[str, object]]:
    """Run `builder build ... --json` under measure; returns (cost, builder's JSON result)."""
    out = cache.parent / f"result-{time.monotonic_ns()}.json"
    cost = measure(["sh", "-c", " ".join([*builder("build", *args, "--cache", str(cache), "--json")])
                    + f" > {out}"])
    if cost["returncode"] != 0:
        raise SystemExit(f"build failed: {args}")
    return cost, json.loads(out.read_text())


def bench_fixture(work: Path) -> list[str]:
    cache = work / "fixture-cache"
    cold, cold_result = timed_build(cache, str(FIXTURE_RECIPE), "--arch", "86", "--no-install")
    hit, _ = timed_build(cache, str(FIXTURE_RECIPE), "--arch", "86", "--no-install")
    timings = cold_result["timings"]
    assert isinstance(timings, dict)
    compile_s = float(timings["compile"])
    overhead = float(str(cold["wall_s"])) - compile_s
    return [
        f"| fixture (4 TUs), sm_86, cold build | {cold['wall_s']} s wall, {cold['cpu_s']} CPU-s |",
        f"| fixture, cache hit (same key) | {hit['wall_s']} s wall, {hit['cpu_s']} CPU-s |",
        f"| **cache hit / cold** | **{float(str(hit['wall_s'])) / float(str(cold['wall_s'])):.3f}** "
        f"(wall) |",
        f"| orchestration overhead of a miss, ready env (wall minus compile step) | {overhead:.1f} s of "
        f"{cold['wall_s']} s (compile step {compile_s:.1f} s; steps: {json.dumps(timings)}) |",
    ]


def bench_shared(work: Path) -> list[str]:
    """Install from a shared cache (pull + sha256 check + pip install + verify) vs a local hit."""
    local, shared = work / "fixture-cache", work / "shared-cache"
    subprocess.run(builder("cache", "push", "--cache-url", str(shared), "--cache", str(local)), check=True)
    hit, _ = timed_build(local, str(FIXTURE_RECIPE), "--arch", "86", "--python", str(make_venv(work / "v1")))
    pulled, result = timed_build(work / "empty-cache", str(FIXTURE_RECIPE), "--arch", "86", "--cache-url",
                                 str(shared), "--python", str(make_venv(work / "v2")))
    assert result["origin"] == str(shared), result
    return [
        f"| fixture, local cache hit + install + verify | {hit['wall_s']} s wall |",
        f"| fixture, pulled from a shared directory + install + verify | {pulled['wall_s']} s wall |",
        f"| **shared / local** | **{ratio(pulled, hit, 'wall_s')}** (wall) |",
    ]


def bench_matrix(work: Path) -> list[str]:
    """A two-cell matrix of fixture builds, then the same matrix again (all cache hits)."""
    args = ["matrix", "build", "--recipe", str(FIXTURE_RECIPE), "--cuda", "13.0", "--arch", "86,80",
            "--cache", str(work / "matrix-cache")]
    first = measure(builder(*args))
    rerun = measure(builder(*args))
    return [
        f"| matrix build, 2 fixture cells (sm_86, sm_80), first run | {first['wall_s']} s wall |",
        f"| the same matrix again (all cache hits) | {rerun['wall_s']} s wall |",
        f"| **rerun / first** | **{ratio(rerun, first, 'wall_s')}** (wall) |",
    ]


def plain_pip_wheel(work: Path, sdist: Path, patch_file: str) -> dict[str, object]:
    """`pip wheel --no-build-isolation` of an sdist with only the C++ standard patch applied."""
    tree = extract(sdist, work / "plain-src")
    apply_patches([Patch(file=patch_file, path=shipped_dir("patches") / patch_file)], tree)
    env_prefix = "CAUSAL_CONV1D_FORCE_BUILD=TRUE BUILDER_CXX_STD=c++20 MAX_JOBS=2 CUDA_HOME=/usr/local/cuda"
    return measure(["sh", "-c", f"{env_prefix} {sys.executable} -m pip wheel --no-build-isolation --no-deps "
                    f"-w {work / 'plain-out'} {tree} > {work / 'plain.log'} 2>&1"])


def bench_causal(work: Path, baseline: bool) -> list[str]:
    sdist = causal_sdist()
    cache = work / "causal-cache"
    (cache / "sources").mkdir(parents=True)
    shutil.copy2(sdist, cache / "sources")
    ours, _ = timed_build(cache, "causal-conv1d", "--arch", "86", "--no-install")
    rows = [f"| causal-conv1d 1.7.0, builder, sm_86 only | {ours['wall_s']} s wall, {ours['cpu_s']} CPU-s, "
            f"{ours['max_process_rss_gb']} GB peak process RSS |"]
    if not baseline:
        return rows
    plain = plain_pip_wheel(work, sdist, "causal-conv1d/cxx-std.patch")
    if plain["returncode"] != 0:
        raise SystemExit(f"plain pip wheel failed: see {work / 'plain.log'}")
    return [
        *rows,
        f"| causal-conv1d 1.7.0, plain `pip wheel --no-build-isolation`, default archs (C++20 patch only) | "
        f"{plain['wall_s']} s wall, {plain['cpu_s']} CPU-s, {plain['max_process_rss_gb']} GB |",
        f"| **builder / plain** | **{ratio(ours, plain, 'wall_s')}** wall, **{ratio(ours, plain, 'cpu_s')}** "
        f"CPU, **{ratio(ours, plain, 'max_process_rss_gb')}** peak RSS |",
    ]


def bench_sccache(work: Path) -> list[str]:
    """causal-conv1d for sm_86 under --ccache: a cold build (empty sccache store), then --force (all hits)."""
    cache = work / "sccache-cache"
    (cache / "sources").mkdir(parents=True)
    shutil.copy2(causal_sdist(), cache / "sources")
    args = ("causal-conv1d", "--arch", "86", "--no-install", "--ccache")
    cold, cold_result = timed_build(cache, *args)
    warm, warm_result = timed_build(cache, *args, "--force")

    def compiled(result: dict[str, object]) -> str:
        stats = result["sccache"]
        assert isinstance(stats, dict) and isinstance(result["timings"], dict)
        return (f"compile step {result['timings']['compile']} s; sccache {stats['compile_requests']} requests, "
                f"{stats['hits']} hits, {stats['misses']} misses")
    return [
        # Wall only: the compiles run in sccache's server, outside the measured process tree.
        f"| causal-conv1d 1.7.0, sm_86, `--ccache`, cold (empty store) | {cold['wall_s']} s wall; "
        f"{compiled(cold_result)} |",
        f"| the same, `--force` (warm store) | {warm['wall_s']} s wall; {compiled(warm_result)} |",
        f"| **cold / warm** | **{ratio(cold, warm, 'wall_s')}** wall |",
    ]


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """The builds started inside see these variables too."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"never happened: {what}")
        time.sleep(0.5)


def bench_compile_cache(work: Path) -> list[str]:
    """The fixture built twice against a moto S3 server on loopback with compile-cache on S3: cold
    (an empty store), then the same key from a fresh local cache (--force: compiled, not pulled)."""
    import boto3

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"}
    try:
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, "moto listening")
        boto3.client("s3", endpoint_url=credentials["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="bench")
        args = (str(FIXTURE_RECIPE), "--arch", "86", "--no-install", "--compile-cache", "s3://bench/compile")
        with environment(**credentials):
            cold, cold_result = timed_build(work / "cc-first", *args)
            shared, shared_result = timed_build(work / "cc-second", *args, "--force")
    finally:
        server.terminate()
        server.wait()

    def said(result: dict[str, object]) -> str:
        stats, timings = result["sccache"], result["timings"]
        assert isinstance(stats, dict) and isinstance(timings, dict)
        return f"compile step {timings['compile']} s; hits {stats['hits']}, misses {stats['misses']}"
    return [
        f"| fixture sm_86, `--compile-cache s3://...` (moto on loopback), cold | {cold['wall_s']} s wall; "
        f"{said(cold_result)} |",
        f"| the same key from a fresh local cache (`--force`), the store shared | {shared['wall_s']} s wall; "
        f"{said(shared_result)} |",
        f"| **cold / shared** | **{ratio(cold, shared, 'wall_s')}** wall |",
    ]


def bench_farm(work: Path) -> list[str]:
    """The fixture through a loopback farm (a scheduler and two build servers of one core each, all
    `builder farm` processes) against the same build here under --ccache, both from empty stores: the
    difference in the compile step per compiled file is the per-file overhead bench/farm_predict.py
    takes."""
    cache, port = work / "farm-cache", free_port()
    url = f"http://127.0.0.1:{port}"
    started = [subprocess.Popen(builder("farm", "scheduler", "--listen", f"127.0.0.1:{port}", "--cache", str(cache)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    tokens = cache / "farm"
    try:
        wait_until(lambda: (tokens / "server-token").is_file(), "the scheduler's tokens")
        for _ in range(2):
            started.append(subprocess.Popen(
                builder("farm", "server", "--scheduler", url, "--token-file", str(tokens / "server-token"),
                        "--addr", f"127.0.0.1:{free_port()}", "--cores", "1", "--cache", str(cache)),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        farm_env = {"BUILDER_FARM": url, "BUILDER_FARM_TOKEN_FILE": str(tokens / "client-token")}
        with environment(**farm_env):
            wait_until(lambda: '"servers": 2' in subprocess.run(builder("farm", "status", "--json"),
                                                                  capture_output=True, text=True).stdout,
                       "two servers registered")
        args = (str(FIXTURE_RECIPE), "--arch", "86", "--no-install")
        local, local_result = timed_build(work / "farm-local", *args, "--ccache")
        with environment(**farm_env):
            farmed, farm_result = timed_build(work / "farm-remote", *args)
    finally:
        for process in started:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    here, there, stats = local_result["timings"], farm_result["timings"], farm_result["sccache"]
    assert isinstance(here, dict) and isinstance(there, dict) and isinstance(stats, dict)
    files = len(list((FIXTURE_RECIPE.parent / "csrc").glob("*.c[up]*")))  # binding.cpp and the .cu files
    per_file = (there["compile"] - here["compile"]) / files
    return [
        f"| fixture sm_86 here, `--ccache`, empty store | {local['wall_s']} s wall; compile step {here['compile']} s |",
        f"| the same through the loopback farm (2 servers x 1 core) | {farmed['wall_s']} s wall; compile step "
        f"{there['compile']} s; steps per server {stats.get('distributed')}, failed over to here "
        f"{stats.get('distributed_failed', 0)} |",
        f"| **per-file overhead of the farm** (compile step difference / {files} compiled files) | "
        f"**{per_file:.1f} s** |",
    ]


def bench_split(work: Path) -> list[str]:
    """causal-conv1d for sm_86 on 2 jobs, each in a fresh cache starting from the shipped reference
    costs (heaviest first either way): --no-split-compile, then with split compiles allowed."""
    runs: dict[str, tuple[dict[str, object], dict[str, object]]] = {}
    for label, extra in (("plain", ("--no-split-compile",)), ("split", ())):
        cache = work / f"split-{label}"
        (cache / "sources").mkdir(parents=True)
        shutil.copy2(causal_sdist(), cache / "sources")
        cost, _ = timed_build(cache, "causal-conv1d", "--arch", "86", "--jobs", "2", "--no-install", *extra)
        shown = subprocess.run(builder("stats", "causal-conv1d", "--cache", str(cache), "--json"),
                               capture_output=True, text=True, check=True)
        runs[label] = cost, json.loads(shown.stdout)[0]

    def row(label: str, what: str) -> str:
        cost, stats = runs[label]
        files = ", ".join(f"{Path(f['file']).name} {f['wall_s']:.0f} s x{f['threads']} ({f['basis']})"
                          for f in stats["slowest"])
        return (f"| causal-conv1d 1.7.0, sm_86, `--jobs 2`, {what} | {cost['wall_s']} s wall, {cost['cpu_s']} CPU-s; "
                f"compiles {stats['wall_s']} s, core use {stats['core_use']}; {files} |")
    plain, split = runs["plain"][0], runs["split"][0]
    return [row("plain", "`--no-split-compile`"), row("split", "split compiles allowed"),
            f"| **split / plain** | **{ratio(split, plain, 'wall_s')}** wall, **{ratio(split, plain, 'cpu_s')}** "
            f"CPU |"]


def causal_sdist() -> Path:
    spec = load_recipe("causal-conv1d").versions["1.7.0"]
    assert spec.file is not None
    return ROOT / "cache" / "sources" / spec.file


def ratio(a: dict[str, object], b: dict[str, object], key: str) -> str:
    return f"{float(str(a[key])) / float(str(b[key])):.2f}"


def bench_flash_attn(work: Path) -> list[str]:
    keep = "flash_fwd_hdim128_fp16_sm80.cu"
    rows = []
    costs = {}
    spec = load_recipe("flash-attn").versions["2.8.3"]
    assert spec.file is not None
    for label, archs in (("sm_86 only", "86"), ("its default four archs (80,90,100,120)", "80,90,100,120")):
        # No commas in the directory names: nvcc splits option values (-I paths too) at commas.
        name = archs.replace(",", "-")
        tree = trimmed_flash_attn(ROOT / "cache" / "sources" / spec.file, work / f"fa-{name}", keep)
        cost, _ = timed_build(work / f"fa-cache-{name}", "flash-attn", "--source", str(tree), "--arch", archs,
                              "--no-install", "--force")
        costs[archs] = cost
        rows.append(f"| flash-attn 2.8.3, flash_api.cpp + {keep}, {label} | {cost['wall_s']} s wall, "
                    f"{cost['cpu_s']} CPU-s, {cost['max_process_rss_gb']} GB |")
    rows.append(f"| **one arch / four archs** | **{ratio(costs['86'], costs['80,90,100,120'], 'cpu_s')}** CPU, "
                f"**{ratio(costs['86'], costs['80,90,100,120'], 'wall_s')}** wall |")
    return rows


def bench_gate_sampling(work: Path, processes: int = 300, seconds: float = 5.0) -> list[str]:
    """The compile gate's own CPU while a compile runs: it samples the compiler's process tree, and
    psutil's children() reads every process in /proc. A 5 s `sleep` stands in for the compiler, with
    `processes` more sleeping processes on the machine (a 16-job build's nvcc pipelines and gates),
    sampled every 0.05 s (the interval before 1f9d319) and every gate.SAMPLE_SECONDS."""
    from builder.building import gate

    def gate_cpu_per_second(interval: float) -> float:
        saved, gate.SAMPLE_SECONDS = gate.SAMPLE_SECONDS, interval
        before, start = time.process_time(), time.monotonic()
        try:
            gate.run_sampled(["sleep", str(seconds)])
        finally:
            gate.SAMPLE_SECONDS = saved
        return (time.process_time() - before) / (time.monotonic() - start)

    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(processes)]
    try:
        total = len(psutil.pids())
        old, new = gate_cpu_per_second(0.05), gate_cpu_per_second(gate.SAMPLE_SECONDS)
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    return [f"| the gate's CPU per second of a compile, {total} processes on the machine, sampling every 0.05 s "
            f"/ every {gate.SAMPLE_SECONDS:g} s | {old:.4f} / {new:.4f} core |",
            f"| **0.05 s / {gate.SAMPLE_SECONDS:g} s** | **{old / new:.1f}** |"]


def bench_retag(work: Path) -> list[str]:
    """Retagging a wheel whose library is large (torch's largest, as flash-attn's 400 MB one stands
    in): builder's rebuild_wheel, which copies deflated members as they are, against deflating every
    member again (what it did before 6a15be2)."""
    import zipfile

    import torch

    from builder.store.retag import rebuild_wheel

    library = max((Path(torch.__file__).parent / "lib").glob("*.so"), key=lambda p: p.stat().st_size)
    wheel = work / "big_pkg-1.0-cp312-cp312-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(library, "big_pkg/_C.so")
        archive.writestr("big_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: big-pkg\nVersion: 1.0\n")
        archive.writestr("big_pkg-1.0.dist-info/RECORD", "")
    start = time.monotonic()
    rebuild_wheel(wheel, work / "big_pkg-1.0+x-cp312-cp312-linux_x86_64.whl", "big_pkg-1.0+x", {})
    copied = time.monotonic() - start
    start = time.monotonic()
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(work / "deflated.whl", "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            with source.open(info) as src, out.open(info.filename, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    deflated = time.monotonic() - start
    size = library.stat().st_size / 1e6
    return [f"| rebuild a wheel holding a {size:.0f} MB library ({library.name}): members copied as compressed "
            f"/ deflated again | {copied:.2f} s / {deflated:.2f} s |",
            f"| **deflated again / copied** | **{deflated / copied:.1f}** |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", action="store_true", help="also the causal-conv1d and flash-attn benchmarks")
    parser.add_argument("--baseline", action="store_true",
                        help="with --upstream: also plain `pip wheel` of causal-conv1d with its nine default archs "
                             "(~40 min on 2 cores)")
    parser.add_argument("--sccache", action="store_true", help="also causal-conv1d cold vs warm under --ccache")
    parser.add_argument("--split", action="store_true",
                        help="also causal-conv1d sm_86 on 2 jobs without and with split compiles (~2 x 5-9 min)")
    parser.add_argument("--compile-cache", action="store_true",
                        help="also the fixture cold vs from a shared compile cache on S3 (moto on loopback)")
    parser.add_argument("--farm", action="store_true",
                        help="also the fixture here vs through a loopback farm (needs root and bubblewrap)")
    parser.add_argument("--overheads", action="store_true",
                        help="also the gate's sampling CPU and retagging a wheel with a large library")
    parser.add_argument("--only", action="store_true",
                        help="only the benchmarks asked for (--upstream, --sccache, --split), not the fixture ones")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    if args.upstream or args.sccache or args.split:
        subprocess.run(builder("fetch", "causal-conv1d", "--cache", str(ROOT / "cache")), check=True)
    if args.upstream:
        subprocess.run(builder("fetch", "flash-attn", "--version", "2.8.3", "--cache", str(ROOT / "cache")), check=True)
    with tempfile.TemporaryDirectory(prefix="builder-bench-") as tmp:
        work = Path(tmp)
        rows = [] if args.only else [*bench_fixture(work), *bench_shared(work), *bench_matrix(work)]
        if args.upstream:
            rows += bench_causal(work, args.baseline)
            rows += bench_flash_attn(work)
        if args.sccache:
            rows += bench_sccache(work)
        if args.split:
            rows += bench_split(work)
        if args.compile_cache:
            rows += bench_compile_cache(work)
        if args.farm:
            rows += bench_farm(work)
        if args.overheads:
            rows += [*bench_gate_sampling(work), *bench_retag(work)]
    machine = f"{platform.node()}: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GB"
    flags = "".join(f" --{flag.replace('_', '-')}" for flag in ("upstream", "baseline", "sccache", "split",
                                                                 "compile_cache", "farm", "overheads", "only")
                    if getattr(args, flag))
    print(append_results(args.results, f"`python bench/run.py{flags}` on {machine}", ("what", "measured"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
