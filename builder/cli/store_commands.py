"""`builder cache ...`: inspect, prune, verify, share and serve the wheel cache; `builder index-url`:
the root of the builds that load in one environment."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from builder.cli.display import Output
from builder.delivery.index_url import environment_of, index_url, store_base, variants_url
from builder.errors import CacheError, UsageError
from builder.fleet.matrix import MatrixSpec, expand, filter_cells
from builder.planning.target import probe_interpreter
from builder.store import maintenance
from builder.store.cache import Cache
from builder.store.page import MatrixCell
from builder.store.remote import find_key, open_store, pull, push, sync
from builder.store.serve import make_server
from builder.workspace import Workspace


def cmd_cache(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    cache = ws.cache
    action = args.cache_command
    if action == "list":
        return cache_list(cache, out)
    if action == "gc":
        max_bytes = maintenance.parse_size(args.max_size) if args.max_size else None
        report = maintenance.gc(cache, keep=args.keep, max_bytes=max_bytes, dry_run=args.dry_run,
                                build_root=ws.settings.build_dir if args.build_folders else None)
        removing = "would remove" if args.dry_run else "removed"

        def render_gc() -> None:
            out.line(f"{removing} {len(report.removed)} entries ({report.freed_bytes / 1024**2:.1f} MB); "
                     f"kept {len(report.kept_installed)} still installed")
            if args.build_folders:
                out.line(f"{removing} {len(report.build_folders)} folder(s) builds left in {ws.settings.build_dir} "
                         f"({report.build_folders_bytes / 1024**2:.1f} MB)")
                for folder in report.build_folders_kept:
                    out.line(f"could not remove {folder} (another user's?)")
            _say_skipped(out, report.skipped_corrupt)
        out.emit(asdict(report), render_gc)
        return 0
    if action == "verify":
        verified = maintenance.verify(cache)
        out.emit(verified, lambda: out.line(
            f"{len(verified['ok'])} entries ok; quarantined: {', '.join(verified['quarantined']) or 'none'}"))
        return CacheError.exit_code if verified["quarantined"] else 0
    if action in ("push", "pull", "sync"):
        return cache_remote(args, ws, out)
    if action == "serve":
        return cache_serve(args, ws)
    entry = cache.find(args.key)
    if action == "show":
        data = {**entry.meta, "path": str(entry.path)}
        out.emit(data, lambda: out.console.print_json(json.dumps(data, default=str)))
        return 0
    cache.remove(entry)
    out.emit({"removed": entry.key}, lambda: out.line(f"removed {entry.key}"))
    return 0


def cache_list(cache: Cache, out: Output) -> int:
    """The entries, then the corrupt ones skipped (also rows of --json, with `corrupt`: why)."""
    entries, corrupt = cache.scan()
    rows: list[dict[str, object]] = [
        {"key": e.key, "recipe": e.meta.get("recipe"), "version": e.meta.get("version"),
         "wheel": e.meta.get("wheel"), "size": e.meta.get("size"), "created": e.meta.get("created")}
        for e in entries]
    rows += [{"key": c.key, "corrupt": c.reason} for c in corrupt]

    def render() -> None:
        table = Table("key", "recipe", "version", "wheel", "created")
        for e in entries:
            table.add_row(e.key[:12], *(str(e.meta.get(k)) for k in ("recipe", "version", "wheel", "created")))
        if entries:
            out.console.print(table)
        elif not corrupt:
            out.line(f"the cache at {cache.root} is empty")
        _say_skipped(out, {c.key: c.reason for c in corrupt})
    out.emit(rows, render)
    return 0


def _say_skipped(out: Output, corrupt: dict[str, str]) -> None:
    for key, reason in corrupt.items():
        out.line(f"skipped corrupt entry {key}: {reason}")
    if corrupt:
        out.line("  `builder cache verify` moves corrupt entries to quarantine/")


def cache_remote(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    url = ws.settings.cache_url
    if not url:
        raise UsageError(f"cache {args.cache_command} needs a shared cache",
                         hint="pass --cache-url URL, or set cache-url in the config file or BUILDER_CACHE_URL")
    store, cache = open_store(url), ws.cache
    moved: dict[str, list[str]] = {"pushed": [], "pulled": []}
    if args.cache_command == "sync":
        moved = sync(store, cache)
    elif args.cache_command == "push":
        entries = [cache.find(k) for k in args.keys] if args.keys else cache.entries()
        moved["pushed"] = [e.key for e in entries if push(store, e, cache)]
    else:
        keys = [find_key(store, k) for k in args.keys] if args.keys else store.list_keys()
        moved["pulled"] = [k for k in keys if cache.get(k) is None and pull(store, k, cache) is not None]
    out.emit({**moved, "url": store.url}, lambda: out.line(
        f"pushed {len(moved['pushed'])}, pulled {len(moved['pulled'])} ({store.url})"))
    return 0


def served_matrix(path: Path, ws: Workspace) -> list[MatrixCell]:
    """The cells of a matrix file as `builder matrix` makes them, those it drops with the reason."""
    kept, dropped = filter_cells(expand(MatrixSpec.from_toml(path, ws.recipes), ws.recipes), ws.recipes,
                                 ws.torch_cuda)
    return ([MatrixCell(c, ws.recipes.load(c.recipe).name) for c in kept]
            + [MatrixCell(c, ws.recipes.load(c.recipe).name, why) for c, why in dropped])


def cache_serve(args: argparse.Namespace, ws: Workspace) -> int:
    cache = ws.cache
    matrix = served_matrix(args.matrix_file, ws) if args.matrix_file else None
    try:
        server = make_server(cache, args.host, args.port, matrix=matrix)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving {cache.root} at http://{host}:{port}/simple/ (Ctrl-C stops)", file=sys.stderr, flush=True)
    print(f"an environment's root: builder index-url --server http://{host}:{port} [--python P] [--arch A]",
          file=sys.stderr, flush=True)
    print(f"what it holds, for people: http://{host}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_index_url(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    target = probe_interpreter(Path(args.python) if args.python else None)
    if args.variants:
        url = variants_url(target, store_base(args.server, ws.cache.root))
        out.emit({"url": url, "python": str(target.python_exe), "torch": target.torch}, lambda: out.line(url))
        return 0
    env = environment_of(target, args.gpu)
    url = index_url(env, store_base(args.server, ws.cache.root))
    base = env.base
    out.emit({"url": url, "python": str(target.python_exe), "python_tag": base.python_tag, "torch": target.torch,
              "cuda": base.cuda, "cxx11_abi": base.cxx11_abi, "gpu": f"sm{env.gpu}"}, lambda: out.line(url))
    return 0
