"""The command line: argument parsing and output only; the work is in pipeline and friends.

Errors arrive as BuilderError and leave as one line (plus a hint) and the error's exit code;
the traceback only with --debug. --json prints one JSON document on stdout (for a failure:
{"error", "kind", "exit_code", ...}).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder import __version__, cache_maint, costs, pipeline
from builder.artifacts import locate_package, uninstall_artifacts
from builder.backends import get_backend
from builder.cache import DEFAULT_CACHE, Cache, write_text_atomic
from builder.cache_maint import parse_size
from builder.ci_github import DEFAULT_CACHE_URL, DEFAULT_RUNNER_LABELS, render_workflow
from builder.doctor import diagnose
from builder.errors import BuilderError, BuildError, CacheError, ToolchainError, UsageError
from builder.install import install_wheel
from builder.matrix import AXES, Cell, MatrixSpec, expand, filter_cells, github_matrices
from builder.matrix_build import CellOutcome, run_matrix
from builder.plan import Request
from builder.progress import StepReporter
from builder.provision import install_toolchain
from builder.recipe import Recipe, load_recipe, recipe_names
from builder.remote import RemoteStore, open_store, pull, push, sync
from builder.serve import make_server
from builder.source import fetch
from builder.toolchain import probe_toolkit
from builder.wheel import read_provenance

EPILOG = """examples:
  builder build causal-conv1d --arch 86           build for sm_86 against this Python's torch
  builder build flash-attn --cuda 11.8 --arch 86 --torch 2.0.1 --torch-index URL
  builder plan flash-attn --arch 8.0,9.0 --json   show what a build would do
  builder cache list                              what the cache holds
"""


def _positive_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of GB")
    return value


def _add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name (see `builder recipes`) or path to a .toml")
    parser.add_argument("--version", dest="pkg_version", help="package version (default: the recipe's)")
    parser.add_argument("--cuda", help="CUDA toolkit X.Y to compile with (default: torch's CUDA)")
    parser.add_argument("--arch", action="append", default=[],
                        help="GPU arch: 86, 8.6, sm_86, 8.6+PTX; repeat or join with , or ; "
                             "(default: the visible GPUs)")
    parser.add_argument("--torch", help="build in a venv with exactly this torch version")
    parser.add_argument("--torch-index", help="index URL to get that torch from (e.g. a per-CUDA index)")
    parser.add_argument("--python", help="target interpreter (default: the one running builder)")
    parser.add_argument("--cxx11-abi", default="auto", choices=("auto", "0", "1"),
                        help="C++ ABI; must match torch's (default: auto)")
    parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: one per core where builder's "
                        "compile gate keeps the memory budget, else from cores and free RAM)")
    parser.add_argument("--memory-budget", type=_positive_gb, metavar="GB",
                        help="memory the running compiles may be expected to use together; each compile is "
                             "admitted only while its expected peak (from the last build's records, else the "
                             "recipe's estimate) fits (default: 80%% of the memory available)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE",
                        help="a choice of one of the recipe's declared variants, e.g. hdims=64,128 (`builder "
                             "recipes` lists them); repeat for several")
    parser.add_argument("--source", help="local archive or directory to use instead of the recipe's URL")
    parser.add_argument("--ccache", action="store_true", help="compile through sccache")
    parser.add_argument("--provision", action="store_true",
                        help="install the CUDA toolkit for --cuda when none is found (see `builder toolchain`)")
    parser.add_argument("--cache-url", default=os.environ.get("BUILDER_CACHE_URL"),
                        help="shared cache (a directory, s3://bucket/prefix or http(s)://...): looked up "
                             "before building, uploaded to after (default: $BUILDER_CACHE_URL)")


def _add_matrix_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix-file", type=Path, help="a TOML file with a [matrix] table (see README)")
    for axis, text in (("recipe", "recipe names"), ("version", "package versions (default: each recipe's)"),
                       ("python", "Python X.Y"), ("torch", "torch versions"), ("cuda", "CUDA X.Y"),
                       ("arch", "GPU archs")):
        parser.add_argument(f"--{axis}", dest=f"axis_{axis}", action="append", default=[],
                            help=f"{text}; repeat or join with commas")


def _matrix_cells(args: argparse.Namespace) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    axes = {axis: [v for value in getattr(args, f"axis_{axis}") for v in value.split(",") if v]
            for axis in AXES}
    if args.matrix_file and any(axes.values()):
        raise UsageError("give either --matrix-file or the axis flags, not both")
    if args.matrix_file:
        spec = MatrixSpec.from_toml(args.matrix_file)
    else:
        axes["python"] = axes["python"] or [f"{sys.version_info.major}.{sys.version_info.minor}"]
        axes["torch"] = axes["torch"] or [installed_torch()]
        spec = MatrixSpec.from_mapping(axes, "matrix flags")
    return filter_cells(expand(spec))


def installed_torch() -> str:
    """The torch release of the interpreter running builder (the default of a --torch axis)."""
    try:
        return importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError as exc:
        raise UsageError("no --torch given and no torch installed here", hint="pass --torch V") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="builder", description="Compile CUDA extensions (flash-attn, causal-conv1d, ...) "
        "against a pinned torch, CUDA toolkit and GPU arch; cache, install and verify the wheel.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--builder-version", action="version", version=f"builder {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache root (default: {DEFAULT_CACHE})")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", parents=[common], help="build, cache, install and verify a recipe")
    _add_target_args(build)
    build.add_argument("--no-install", action="store_true", help="build and cache only")
    _add_install_options(build)
    build.add_argument("--install-dir", help="where artifacts go (default: the target's installed package, or a "
                                             "--source directory that holds the recipe's marker file, e.g. a "
                                             "model's quantization.py)")
    build.add_argument("--force", action="store_true", help="rebuild even when the cache has it")

    plan = sub.add_parser("plan", parents=[common], help="show what a build would do; builds nothing")
    _add_target_args(plan)
    _add_install_options(plan)

    sub.add_parser("recipes", parents=[common], help="list recipes, versions and backends")

    fetch_cmd = sub.add_parser("fetch", parents=[common], help="download a recipe's sources for offline use")
    fetch_cmd.add_argument("recipe")
    fetch_cmd.add_argument("--version", dest="pkg_version", help="one version (default: all)")

    cache = sub.add_parser("cache", help="inspect the wheel cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cache_sub.add_parser("list", parents=[common], help="list cached builds")
    for name, text in (("show", "show one entry"), ("rm", "remove one entry")):
        action = cache_sub.add_parser(name, parents=[common], help=text)
        action.add_argument("key", help="cache key or a unique prefix of one")
    gc = cache_sub.add_parser("gc", parents=[common], help="prune old entries (never ones an install still uses)")
    gc.add_argument("--keep", type=int, help="keep the newest N entries per recipe")
    gc.add_argument("--max-size", help="then remove oldest first until the cache fits, e.g. 20G")
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    cache_sub.add_parser("verify", parents=[common], help="re-hash every wheel; quarantine corrupt entries")
    for name, text in (("push", "upload entries to a shared cache"),
                       ("pull", "download entries from a shared cache (each checked against its sha256)"),
                       ("sync", "pull what only the shared cache has, push what only this one has")):
        action = cache_sub.add_parser(name, parents=[common], help=text)
        action.add_argument("--cache-url", required=True, help="a directory, s3://bucket/prefix or http(s)://...")
        if name != "sync":
            action.add_argument("keys", nargs="*", help="cache keys or unique prefixes (default: all)")
    serve = cache_sub.add_parser("serve", parents=[common],
                                 help="serve the cache as a PEP 503/691 index for pip, uv and --cache-url")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")

    stats = sub.add_parser("stats", parents=[common],
                           help="per-file compile costs of a recipe's builds: slowest files, peak memory, core use")
    stats.add_argument("recipe")
    stats.add_argument("--top", type=int, default=10, help="slowest files to show (default 10)")
    stats.add_argument("--all", action="store_true", help="every recorded kind of build, not only the newest")

    doctor = sub.add_parser("doctor", parents=[common], help="explain what this machine can build, and fixes")
    doctor.add_argument("--python", help="target interpreter (default: the one running builder)")

    toolchain = sub.add_parser("toolchain", help="list or install CUDA toolkits")
    toolchain_sub = toolchain.add_subparsers(dest="toolchain_command", required=True, metavar="ACTION")
    toolchain_sub.add_parser("list", parents=[common], help="toolkits found here and provisioned into the cache")
    toolchain_install = toolchain_sub.add_parser(
        "install", parents=[common], help="install CUDA 13.x from PyPI's NVIDIA wheels into the cache, "
        "or CUDA 11.8 from Debian's archive (root, apt)")
    toolchain_install.add_argument("cuda", help="CUDA version X.Y")

    matrix = sub.add_parser("matrix", parents=[common],
                            help="expand a build matrix and drop impossible cells (`matrix build` runs it here)")
    _add_matrix_args(matrix)
    matrix.add_argument("--format", choices=("table", "github"), default="table",
                        help="a table, or GitHub Actions strategy.matrix values (with --json: the cells)")
    matrix_sub = matrix.add_subparsers(dest="matrix_command", metavar="ACTION")
    matrix_build = matrix_sub.add_parser("build", parents=[common], help="build the possible cells on this machine")
    _add_matrix_args(matrix_build)
    matrix_build.add_argument("--parallel", type=int, default=1, help="cells at once, sharing the cores (default 1)")
    matrix_build.add_argument("--memory-budget", type=_positive_gb, help="GB the running cells may expect to use "
                              "(default: the memory available now)")
    matrix_build.add_argument("--cache-url", default=os.environ.get("BUILDER_CACHE_URL"),
                              help="shared cache to look up and upload to (default: $BUILDER_CACHE_URL)")

    ci = sub.add_parser("ci", help="write CI configuration")
    ci_sub = ci.add_subparsers(dest="ci_command", required=True, metavar="SYSTEM")
    github = ci_sub.add_parser("github", parents=[common],
                               help="a GitHub Actions workflow building the matrix on self-hosted GPU runners")
    _add_matrix_args(github)
    github.add_argument("--output", type=Path, default=Path(".github/workflows/builder-matrix.yml"),
                        help="where to write it (default: .github/workflows/builder-matrix.yml)")
    github.add_argument("--runner-label", action="append", default=[],
                        help="runs-on label, repeatable (default: self-hosted, linux, gpu)")
    github.add_argument("--cache-url-expr", default=DEFAULT_CACHE_URL,
                        help="the --cache-url each job uses (default: the BUILDER_CACHE_URL secret)")

    uninstall = sub.add_parser("uninstall", parents=[common],
                               help="undo an artifacts install: restore the files it replaced, remove the rest")
    uninstall.add_argument("recipe")
    where = uninstall.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", help="the directory the libraries were installed into")
    where.add_argument("--artifacts", action="store_true",
                       help="the libraries installed into the recipe's package in --python's environment")
    uninstall.add_argument("--python", help="the interpreter whose package holds them (default: this one)")

    install = sub.add_parser("install", parents=[common], help="install a wheel file or cache entry")
    install.add_argument("wheel", help="path of a .whl, or a cache key (prefix)")
    install.add_argument("--python", help="target interpreter (default: the one running builder)")
    return parser


def _request(args: argparse.Namespace, *, install: bool) -> Request:
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    return Request(recipe=args.recipe, version=args.pkg_version, cuda=args.cuda,
                   archs=tuple(args.arch), torch=args.torch, torch_index=args.torch_index,
                   python=args.python, cxx11_abi=args.cxx11_abi, jobs=args.jobs,
                   source=args.source, ccache=args.ccache, provision=args.provision, cache_url=args.cache_url,
                   force=getattr(args, "force", False), install=install,
                   install_mode=getattr(args, "install_mode", "auto"), install_dir=getattr(args, "install_dir", None),
                   companions=not getattr(args, "no_companions", False), memory_budget=args.memory_budget,
                   variants=tuple(args.variant))


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)

    def emit(self, data: Any, render: Any = None) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, default=str))
        elif render is not None:
            render()


def cmd_build(args: argparse.Namespace, out: Output) -> int:
    reporter = StepReporter(quiet=args.json)
    result = pipeline.build(_request(args, install=not args.no_install), Cache(args.cache), reporter)

    def render() -> None:
        for done in [*result.companions, result]:
            status = "cache hit" if done.cache_hit else "built"
            out.console.print(f"{status}: {done.entry.wheel}")
        if result.installed_into:
            out.console.print(f"installed into {result.installed_into}; verified: "
                              f"{json.dumps(result.verified)}")
    out.emit(result.to_json(), render)
    return 0


def cmd_plan(args: argparse.Namespace, out: Output) -> int:
    cache = Cache(args.cache)
    plan = pipeline.prepare(_request(args, install=False), cache, make_env=False)
    data = plan.to_json()
    backend = get_backend(plan.backend)
    data["commands"] = backend.commands(plan, Path("<src>"), Path("<out>"))
    data["cache_hit"] = cache.get(plan.key) is not None
    data["pin_rewrites"] = [c.describe() for c in pipeline.pin_preview(plan, cache)]

    def render() -> None:
        for key in ("recipe", "version", "backend", "cache_key", "cache_hit", "local_version",
                    "cxx_std"):
            out.console.print(f"{key:15} {data[key]}")
        for key in ("source", "target", "build_env", "toolkit", "host_compiler", "jobs"):
            out.console.print(f"{key:15} {json.dumps(data[key])}")
        out.console.print(f"{'archs':15} {' '.join(data['archs'])}   gencode: {' '.join(data['gencode'])}")
        if data["variants"]:
            out.console.print(f"{'variants':15} " + " ".join(f"{k}={v}" for k, v in data["variants"].items()))
        out.console.print("patches:" + "".join(
            f"\n  {p['file']} (" + (f"variant {p['variants']}" if "variants" in p else f"when {p['when']}") + ")"
            for p in data["patches"]))
        out.console.print("env:" + "".join(f"\n  {k}={v}" for k, v in data["env"].items()))
        if data["companions"]:
            out.console.print("companions (built first):" + "".join(
                f"\n  {name} {version}" for name, version in data["companions"].items()), markup=False)
        if data["pin_rewrites"]:
            out.console.print("pin rewrites:" + "".join(f"\n  {c}" for c in data["pin_rewrites"]), markup=False)
        out.console.print("commands:" + "".join(f"\n  {' '.join(c)}" for c in data["commands"]))
    out.emit(data, render)
    return 0


def cmd_recipes(args: argparse.Namespace, out: Output) -> int:
    recipes = [load_recipe(name) for name in recipe_names()]
    data = [{"name": r.name, "backend": r.backend, "default_version": r.default_version,
             "versions": sorted(r.versions), "description": r.description,
             "variants": {v.name: {"choices": list(v.choices), "default": v.default, "multi": v.multi,
                                   "description": v.description} for v in r.variants.values()}}
            for r in recipes]

    def render() -> None:
        table = Table("recipe", "backend", "versions (default first)", "variants (default)", "description")
        for r in recipes:
            others = [v for v in sorted(r.versions) if v != r.default_version]
            variants = "\n".join(f"{v.name}={'|'.join(v.choices)}{' (list)' if v.multi else ''} ({v.default})"
                                 for v in r.variants.values())
            table.add_row(r.name, r.backend, ", ".join([r.default_version, *others]), variants, r.description)
        out.console.print(table)
    out.emit(data, render)
    return 0


def cmd_fetch(args: argparse.Namespace, out: Output) -> int:
    recipe = load_recipe(args.recipe)
    versions = [recipe.source_for(args.pkg_version)[0]] if args.pkg_version else sorted(recipe.versions)
    sources = Cache(args.cache).dir("sources")
    fetched = {version: str(fetch(recipe.versions[version], sources)) for version in versions}
    def render() -> None:
        for version, path in fetched.items():
            out.console.print(f"{version}: {path}")
    out.emit(fetched, render)
    return 0


def cmd_cache(args: argparse.Namespace, out: Output) -> int:
    cache = Cache(args.cache)
    if args.cache_command == "list":
        entries = cache.entries()
        rows = [{"key": e.key, "recipe": e.meta.get("recipe"), "version": e.meta.get("version"),
                 "wheel": e.meta.get("wheel"), "size": e.meta.get("size"),
                 "created": e.meta.get("created")} for e in entries]

        def render() -> None:
            table = Table("key", "recipe", "version", "wheel", "created")
            for e in entries:
                table.add_row(e.key[:12], *(str(e.meta.get(k)) for k in ("recipe", "version", "wheel", "created")))
            out.console.print(table if entries else f"the cache at {cache.root} is empty")
        out.emit(rows, render)
        return 0
    if args.cache_command == "gc":
        max_bytes = parse_size(args.max_size) if args.max_size else None
        gc_report = cache_maint.gc(cache, keep=args.keep, max_bytes=max_bytes, dry_run=args.dry_run)
        gc_data = asdict(gc_report)
        out.emit(gc_data, lambda: out.console.print(
            f"{'would remove' if args.dry_run else 'removed'} {len(gc_report.removed)} entries "
            f"({gc_report.freed_bytes / 1024**2:.1f} MB); kept {len(gc_report.kept_installed)} still installed"))
        return 0
    if args.cache_command == "verify":
        verified = cache_maint.verify(cache)
        out.emit(verified, lambda: out.console.print(
            f"{len(verified['ok'])} entries ok; quarantined: {', '.join(verified['quarantined']) or 'none'}"))
        return CacheError.exit_code if verified["quarantined"] else 0
    if args.cache_command in ("push", "pull", "sync"):
        return cmd_cache_remote(args, cache, out)
    if args.cache_command == "serve":
        return cmd_cache_serve(args, cache)
    entry = cache.find(args.key)
    if args.cache_command == "show":
        data = {**entry.meta, "path": str(entry.path)}
        out.emit(data, lambda: out.console.print_json(json.dumps(data, default=str)))
        return 0
    cache.remove(entry)
    out.emit({"removed": entry.key}, lambda: out.console.print(f"removed {entry.key}"))
    return 0


def cmd_cache_remote(args: argparse.Namespace, cache: Cache, out: Output) -> int:
    store = open_store(args.cache_url)
    moved: dict[str, list[str]] = {"pushed": [], "pulled": []}
    if args.cache_command == "sync":
        moved = sync(store, cache)
    elif args.cache_command == "push":
        entries = [cache.find(k) for k in args.keys] if args.keys else cache.entries()
        moved["pushed"] = [e.key for e in entries if push(store, e, cache)]
    else:
        keys = [_remote_key(store, k) for k in args.keys] if args.keys else store.list_keys()
        moved["pulled"] = [k for k in keys if cache.get(k) is None and pull(store, k, cache) is not None]
    out.emit({**moved, "url": store.url}, lambda: out.console.print(
        f"pushed {len(moved['pushed'])}, pulled {len(moved['pulled'])} ({store.url})"))
    return 0


def _remote_key(store: RemoteStore, prefix: str) -> str:
    matches = [k for k in store.list_keys() if k.startswith(prefix)]
    if len(matches) != 1:
        raise CacheError(f"{len(matches) or 'no'} entries in {store.url} match {prefix!r}")
    return matches[0]


def cmd_cache_serve(args: argparse.Namespace, cache: Cache) -> int:
    try:
        server = make_server(cache, args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving {cache.root} at http://{host}:{port}/simple/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_install(args: argparse.Namespace, out: Output) -> int:
    cache = Cache(args.cache)
    path = Path(args.wheel)
    wheel = path if path.suffix == ".whl" and path.is_file() else cache.verified_wheel(cache.find(args.wheel))
    python = Path(args.python) if args.python else Path(sys.executable)
    install_wheel(wheel, python, log_path=cache.dir("logs") / "install.log")
    if wheel.parent.parent == cache.root / "entries":
        cache.record_install(python, cache.find(wheel.parent.name))
    data = {"installed": str(wheel), "python": str(python), "provenance": read_provenance(wheel)}
    out.emit(data, lambda: out.console.print(f"installed {wheel.name} into {python}"))
    return 0


def _add_install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--install-mode", choices=("auto", "wheel", "artifacts"), default="auto",
                        help="wheel: pip install; artifacts: only the built libraries, into the package the "
                             "target already has (bitsandbytes) or --install-dir; auto: artifacts where the "
                             "recipe installs them and the target has the package, else wheel")
    parser.add_argument("--no-companions", action="store_true",
                        help="drop the requirements the recipe would satisfy with builder's own build of "
                             "another recipe (autoawq: autoawq-kernels) instead of building it first")


def cmd_uninstall(args: argparse.Namespace, out: Output) -> int:
    recipe = load_recipe(args.recipe)
    directory = Path(args.dir).expanduser().resolve() if args.dir else artifacts_package_dir(recipe, args.python)
    names = uninstall_artifacts(directory, recipe.name)
    data = {"recipe": recipe.name, "dir": str(directory), "restored_or_removed": names}
    out.emit(data, lambda: out.console.print(f"uninstalled {recipe.name} from {directory}: {', '.join(names)}"))
    return 0


def artifacts_package_dir(recipe: Recipe, python_arg: str | None) -> Path:
    """The folder of the recipe's package in the --python interpreter (found without importing it)."""
    package = recipe.artifacts.package if recipe.artifacts else ""
    if not package:
        raise UsageError(f"{recipe.name} installs no artifacts into a package", hint="pass --dir DIR")
    python = Path(python_arg) if python_arg else Path(sys.executable)
    folder, _ = locate_package(python, package)
    if folder is None:
        raise UsageError(f"{python} has no {package} installed")
    return folder


def cmd_doctor(args: argparse.Namespace, out: Output) -> int:
    report = diagnose(Path(args.python) if args.python else None)
    marks = {"ok": "[green]ok[/green]   ", "warn": "[yellow]warn[/yellow] ", "error": "[red]error[/red]"}

    def render() -> None:
        data = report.to_json()
        out.console.print(f"driver      {report.driver.summary()}")
        torch = data["torch"]
        out.console.print(f"torch       {torch['version']} (CUDA {torch['cuda']}, cxx11 ABI {torch['cxx11_abi']}, "
                          f"CUDA usable: {torch['cuda_available']}) in {torch['python']}")
        for toolkit in report.toolkits:
            out.console.print(f"toolkit     CUDA {toolkit.version} at {toolkit.root} (nvcc {toolkit.nvcc})")
        out.console.print("compilers   " + ", ".join(f"{c.cxx} ({c.major})" for c in report.compilers))
        for verdict in report.verdicts:
            out.console.print(f"{marks[verdict.level]} {escape(verdict.text)}", markup=True)
            if verdict.fix:
                out.console.print(f"      fix: {verdict.fix}", markup=False)
    out.emit(report.to_json(), render)
    return 1 if any(v.level == "error" for v in report.verdicts) else 0


def cmd_toolchain(args: argparse.Namespace, out: Output) -> int:
    cache = Cache(args.cache)
    if args.toolchain_command == "install":
        root = install_toolchain(args.cuda, cache.dir("toolchains"),
                                 cache.dir("logs") / f"toolchain-{args.cuda}.log")
        toolkit = probe_toolkit(root)
        if toolkit is None:
            raise ToolchainError(f"the toolkit installed at {root} does not answer as a CUDA toolkit")
        data = {"version": toolkit.version, "root": str(root), "archs": list(toolkit.archs)}
        out.emit(data, lambda: out.console.print(f"CUDA {toolkit.version} ready at {root}"))
        return 0
    toolkits = pipeline.machine_toolkits(cache)
    rows = [{"version": t.version, "root": str(t.root), "provisioned": cache.root in t.root.parents,
             "archs": list(t.archs)} for t in toolkits]

    def render() -> None:
        table = Table("CUDA", "root", "provisioned", "archs")
        for row in rows:
            table.add_row(str(row["version"]), str(row["root"]), "yes" if row["provisioned"] else "",
                          " ".join(row["archs"]))  # type: ignore[arg-type]
        out.console.print(table if rows else "no CUDA toolkit found; try `builder toolchain install 13.0`")
    out.emit(rows, render)
    return 0


def cmd_matrix(args: argparse.Namespace, out: Output) -> int:
    if args.matrix_command == "build":
        return cmd_matrix_build(args, out)
    kept, dropped = _matrix_cells(args)
    if args.format == "github":
        matrices = github_matrices(kept)
        out.emit(matrices, lambda: print(json.dumps(matrices, indent=2)))
        return 0
    data = {"cells": [c.to_json() for c in kept],
            "dropped": [{**c.to_json(), "reason": reason} for c, reason in dropped]}

    def render() -> None:
        table = Table(*AXES, "status")
        for cell in kept:
            table.add_row(*cell.to_json().values(), "build")
        for cell, reason in dropped:
            table.add_row(*cell.to_json().values(), f"skip: {reason}")
        out.console.print(table)
        out.console.print(f"{len(kept)} to build, {len(dropped)} dropped")
    out.emit(data, render)
    return 0


def cmd_matrix_build(args: argparse.Namespace, out: Output) -> int:
    if args.parallel < 1:
        raise UsageError("--parallel must be at least 1")
    kept, dropped = _matrix_cells(args)
    cache = Cache(args.cache)
    skipped = [CellOutcome(cell, "skipped", reason, 0.0) for cell, reason in dropped]

    def done(outcome: CellOutcome) -> None:
        if not args.json:
            out.console.print(f"{outcome.status:>9}  {outcome.cell.label}  ({outcome.seconds:.0f} s)")
    outcomes = run_matrix(kept, cache, parallel=args.parallel, cache_url=args.cache_url,
                          memory_budget_gb=args.memory_budget, on_done=done) + skipped

    def render() -> None:
        table = Table("cell", "status", "seconds", "detail")
        for o in outcomes:
            table.add_row(o.cell.label, o.status, f"{o.seconds:.0f}", o.detail)
        out.console.print(table)
    out.emit([o.to_json() for o in outcomes], render)
    return BuildError.exit_code if any(o.status == "failed" for o in outcomes) else 0


def cmd_ci(args: argparse.Namespace, out: Output) -> int:
    kept, dropped = _matrix_cells(args)
    if not kept:
        raise UsageError("every cell of the matrix was dropped; nothing to build",
                         hint="`builder matrix` with the same arguments shows why")
    text = render_workflow(kept, runner_labels=tuple(args.runner_label) or DEFAULT_RUNNER_LABELS,
                           cache_url=args.cache_url_expr)
    write_text_atomic(args.output, text)
    data = {"output": str(args.output), "cells": len(kept), "dropped": len(dropped)}
    out.emit(data, lambda: out.console.print(f"wrote {args.output}: {len(kept)} cells ({len(dropped)} dropped)"))
    return 0


def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    found = costs.for_recipe(Cache(args.cache), args.recipe)
    if not found:
        raise UsageError(f"no compile records for {args.recipe} in {args.cache}",
                         hint=f"builder build {args.recipe} records them (builds with --ccache do not)")
    shown = found if args.all else found[:1]
    data = [{**c.summary(), "key": c.key, "version": c.version, "archs": c.archs, "cuda": c.cuda, "host": c.host,
             "jobs": c.jobs, "cores": c.cores, "memory_budget_gb": c.memory_budget_gb,
             "slowest": [asdict(f) for f in sorted(c.files, key=lambda f: -f.wall_s)[:args.top]]} for c in shown]

    def render() -> None:
        for c, d in zip(shown, data, strict=True):
            out.console.print(f"{args.recipe} {c.version} for sm_{','.join(c.archs) or '-'}, CUDA {c.cuda}, {c.host}: "
                              f"{costs.describe(c)}; {c.cpu_s:.0f} CPU-s on {c.jobs} job(s) of {c.cores} cores, "
                              f"budget {c.memory_budget_gb:g} GB")
            table = Table("file", "wall s", "CPU s", "peak MB", "waited s")
            for f in d["slowest"]:
                table.add_row(f["file"], f"{f['wall_s']:.1f}", f"{f['cpu_s']:.1f}", f"{f['peak_mb']:.0f}",
                              f"{f['waited_s']:.1f}")
            out.console.print(table)
    out.emit(data, render)
    return 0


COMMANDS = {"build": cmd_build, "plan": cmd_plan, "recipes": cmd_recipes, "fetch": cmd_fetch,
            "matrix": cmd_matrix, "ci": cmd_ci, "cache": cmd_cache, "install": cmd_install,
            "uninstall": cmd_uninstall,
            "stats": cmd_stats, "doctor": cmd_doctor, "toolchain": cmd_toolchain}


def report_error(exc: BuilderError) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[bold red]error:[/bold red] {escape(exc.message)}", markup=True)
    if isinstance(exc, BuildError):
        if exc.first_error:
            err.print(f"  first error: {exc.first_error}", markup=False)
        if exc.log_path:
            err.print(f"  full log: {exc.log_path}", markup=False)
    if exc.hint:
        err.print(f"  hint: {exc.hint}", markup=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(getattr(args, "json", False))
    try:
        return COMMANDS[args.command](args, out)
    except BuilderError as exc:
        if getattr(args, "debug", False):
            raise
        report_error(exc)
        out.emit(exc.to_json())
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
