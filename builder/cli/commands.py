"""The commands that build, plan, explain and install: each turns its arguments into a library
call and renders the answer (text, or one JSON document with --json)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from builder import api
from builder.building import reference
from builder.building.costs import BuildCosts
from builder.cli.display import Output
from builder.delivery.artifacts import package_folder, uninstall_artifacts
from builder.delivery.install import install_wheel
from builder.errors import BuilderError, ToolchainError, UsageError
from builder.planning.doctor import diagnose
from builder.planning.farm import farm_status
from builder.planning.plan import find_sccache
from builder.planning.provision import install_toolchain
from builder.planning.request import Request
from builder.planning.toolchain import probe_toolkit
from builder.store import records
from builder.store.retag import read_provenance
from builder.workspace import Workspace


def request_from(args: argparse.Namespace, *, install: bool) -> Request:
    """The build request the arguments make; the options that are settings reach the build
    through the workspace's settings instead (Workspace.complete)."""
    return Request(recipe=args.recipe, version=args.pkg_version, cuda=args.cuda, torch=args.torch,
                   python=args.python, cxx11_abi=args.cxx11_abi, source=args.source, provision=args.provision,
                   force=getattr(args, "force", False), install=install,
                   install_mode=getattr(args, "install_mode", "auto"), install_dir=getattr(args, "install_dir", None),
                   companions=not getattr(args, "no_companions", False), variants=tuple(args.variant))


def cmd_build(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if args.check:
        return cmd_check(args, ws, out)
    result = api.build(request_from(args, install=not args.no_install), ws=ws)

    def render() -> None:
        for done in [*result.companions, result]:
            out.line(f"{'cache hit' if done.cache_hit else 'built'}: {done.entry.wheel}")
        if result.installed_into:
            out.line(f"installed into {result.installed_into}; verified: {json.dumps(result.verified)}")
    out.emit(result.to_json(), render)
    return 0


def cmd_check(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    """build --check: exit 0 when the rebuild is byte-identical, 1 when it differs (and how)."""
    result = api.check(request_from(args, install=False), ws=ws)
    comparison = result.comparison

    def render() -> None:
        if comparison.identical:
            out.line(f"reproducible: the rebuild of {result.entry.wheel.name} is byte-identical "
                     f"(key {result.entry.key})")
            return
        out.line(f"not reproducible: the rebuild of {result.entry.wheel.name} differs (key {result.entry.key})")
        out.line(f"  stored:  {result.entry.wheel}\n  rebuilt: {result.rebuilt}")
        for member in comparison.members:
            out.line(f"  {member.describe()}")
        for what in comparison.archive:
            out.line(f"  zip: {what}")
    out.emit(result.to_json(), render)
    return 0 if comparison.identical else 1


SPLIT_MODES = {"off": "off", "load": "on: long nvcc compiles over idle cores",
               "shipped": "on: the files the shipped costs call long (through sccache: the same in every build)"}


def cmd_plan(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    data = api.plan(request_from(args, install=False), ws=ws).to_json()

    def render() -> None:
        for key in ("recipe", "version", "backend", "cache_key", "cache_hit", "local_version", "cxx_std"):
            out.line(f"{key:15} {data[key]}")
        for note in data["notes"]:
            out.line(f"{'note':15} {note}")
        for key in ("source", "target", "build_env", "toolkit", "host_compiler", "jobs"):
            out.line(f"{key:15} {json.dumps(data[key])}")
        out.line(f"{'archs':15} {' '.join(data['archs'])}   gencode: {' '.join(data['gencode'])}")
        out.line(f"{'split_compile':15} {SPLIT_MODES[data['split_mode']]}")
        if data["variants"]:
            out.line(f"{'variants':15} " + " ".join(f"{k}={v}" for k, v in data["variants"].items()))
        out.line("patches:" + "".join(
            f"\n  {p['file']} (" + (f"variant {p['variants']}" if "variants" in p else f"when {p['when']}") + ")"
            for p in data["patches"]))
        out.line("env:" + "".join(f"\n  {k}={v}" for k, v in data["env"].items()))
        render_environment(out, data["environment"])
        out.line(f"{'platform tag':15} {data['platform_tag']} at best (this machine's glibc); the stored wheel "
                 "gets the tag its own symbol versions allow")
        if data["companions"]:
            out.line("companions (built first):" + "".join(
                f"\n  {name} {version}" for name, version in data["companions"].items()))
        if data["pin_rewrites"]:
            out.line("pin rewrites:" + "".join(f"\n  {c}" for c in data["pin_rewrites"]))
        out.line("commands:" + "".join(f"\n  {' '.join(c)}" for c in data["commands"]))
    out.emit(data, render)
    return 0


def render_environment(out: Output, environment: dict[str, Any]) -> None:
    """What the build takes from the user's environment (builder/planning/environment.py)."""
    if environment["in_key"]:
        out.line("from your environment (in the cache key):" + "".join(
            f"\n  {k}={v}" for k, v in environment["in_key"].items()))
    if environment["passed"]:
        out.line(f"passed through (cannot change the binary): {' '.join(environment['passed'])}")
    if environment["dropped"]:
        out.line("dropped from your environment (the build does not see them):" + "".join(
            f"\n  {k}: {why}" for k, why in environment["dropped"].items()))
    if environment["ignored"]:
        out.line(f"and {environment['ignored']} other variable(s) no build reads, dropped")


def cmd_recipes(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    infos = api.recipes(ws=ws)

    def render() -> None:
        table = Table("recipe", "backend", "versions (default first)", "variants (default)", "from", "description")
        for column in table.columns:  # a narrow terminal wraps the cells; a name is never cut short
            column.overflow = "fold"
        table.columns[0].no_wrap = True
        table.columns[0].min_width = max((len(info.recipe.name) for info in infos), default=0)
        for info in infos:
            r = info.recipe
            others = [v for v in sorted(r.versions) if v != r.default_version]
            variants = "\n".join(f"{v.name}={'|'.join(v.choices)}{' (list)' if v.multi else ''} ({v.default})"
                                 for v in r.variants.values())
            table.add_row(r.name, r.backend, ", ".join([r.default_version, *others]), escape(variants),
                          escape(info.origin), escape(r.description))
        out.console.print(table)
    out.emit([info.to_json() for info in infos], render)
    return 0


def cmd_config(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    rows = ws.settings.describe()

    def render() -> None:
        out.line(f"config file: {ws.settings.config_file}"
                 + ("" if ws.settings.config_file and ws.settings.config_file.is_file() else " (none)"))
        table = Table("setting", "value", "from")
        for row in rows:
            value = row["value"]
            shown = json.dumps(value) if isinstance(value, (list, dict)) else ("" if value is None else str(value))
            if row["unset"]:
                shown = f"({row['unset']})"
            table.add_row(row["name"], escape(shown), escape(row["origin"]))
        out.console.print(table)
    out.emit({"config_file": str(ws.settings.config_file), "settings": rows}, render)
    return 0


def cmd_fetch(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    recipe = ws.recipes.load(args.recipe)
    versions = [recipe.source_for(args.pkg_version)[0]] if args.pkg_version else sorted(recipe.versions)
    fetched = {version: str(ws.fetch(recipe.versions[version])) for version in versions}
    out.emit(fetched, lambda: out.line("\n".join(f"{version}: {path}" for version, path in fetched.items())))
    return 0


def cmd_install(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    cache = ws.cache
    wheel = local_wheel(args.wheel) or cache.verified_wheel(cache.find(args.wheel))
    python = Path(args.python) if args.python else Path(sys.executable)
    install_wheel(wheel, python, log_path=cache.log_file("install.log", ws.reporter.say), path=ws.environ.get("PATH"))
    if (entry := cache.entry_of(wheel)) is not None:
        cache.record_install(python, entry)
    data = {"installed": str(wheel), "python": str(python), "provenance": read_provenance(wheel)}
    out.emit(data, lambda: out.line(f"installed {wheel.name} into {python}"))
    return 0


def local_wheel(argument: str) -> Path | None:
    """The wheel file `argument` names, None when it is a cache key (no path, no .whl)."""
    path = Path(argument).expanduser()
    if os.sep not in argument and path.suffix != ".whl":
        return None
    hint = "give a wheel file, or a cache key (builder cache list)"
    if not path.exists():
        raise UsageError(f"{argument}: no such file", hint=hint)
    if not path.is_file() or path.suffix != ".whl":
        raise UsageError(f"{argument} is not a wheel file (*.whl)", hint=hint)
    return path


def cmd_uninstall(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    recipe = ws.recipes.load(args.recipe)
    if args.dir:
        directory = Path(args.dir).expanduser().resolve()
    elif recipe.artifacts is not None and recipe.artifacts.package:
        directory = package_folder(Path(args.python) if args.python else Path(sys.executable),
                                   recipe.artifacts.package)
    else:
        raise UsageError(f"{recipe.name} installs no artifacts into a package", hint="pass --dir DIR")
    names = uninstall_artifacts(directory, recipe.name)
    data = {"recipe": recipe.name, "dir": str(directory), "restored_or_removed": names}
    out.emit(data, lambda: out.line(f"uninstalled {recipe.name} from {directory}: {', '.join(names)}"))
    return 0


def cmd_doctor(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    report = diagnose(Path(args.python) if args.python else None, environ=ws.environ,
                      toolkits=ws.toolkits())
    marks = {"ok": "[green]ok[/green]   ", "warn": "[yellow]warn[/yellow] ", "error": "[red]error[/red]"}
    farm = doctor_farm(ws)

    def render() -> None:
        data = report.to_json()
        out.line(f"driver      {report.driver.summary()}")
        torch = data["torch"]
        out.line(f"torch       {torch['version']} (CUDA {torch['cuda']}, cxx11 ABI {torch['cxx11_abi']}, "
                 f"CUDA usable: {torch['cuda_available']}) in {torch['python']}")
        for toolkit in report.toolkits:
            out.line(f"toolkit     CUDA {toolkit.version} at {toolkit.root} (nvcc {toolkit.nvcc})")
        out.line("compilers   " + ", ".join(f"{c.cxx} ({c.major})" for c in report.compilers))
        if farm is not None:
            out.line(f"farm        {farm.get('status') or 'error: ' + farm['error']}")
        for verdict in report.verdicts:
            out.console.print(f"{marks[verdict.level]} {escape(verdict.text)}", markup=True)
            if verdict.fix:
                out.line(f"      fix: {verdict.fix}")
    out.emit({**report.to_json(), **({"farm": farm} if farm is not None else {})}, render)
    failed = any(v.level == "error" for v in report.verdicts) or (farm is not None and "error" in farm)
    return 1 if failed else 0


def doctor_farm(ws: Workspace) -> dict[str, Any] | None:
    """The farm setting's scheduler, asked (None: no farm set)."""
    try:
        chosen = ws.farm()
        if chosen is None:
            return None
        status = farm_status(find_sccache(Path(sys.executable), ws.environ.get("PATH", "")), chosen)
    except BuilderError as exc:
        return {"url": ws.settings.farm, "error": exc.message}
    return {"url": status.url, "servers": status.servers, "cpus": status.cpus, "status": status.describe()}


def cmd_toolchain(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    cache = ws.cache
    if args.toolchain_command == "install":
        root = install_toolchain(args.cuda, cache.path("toolchains"), cache.path("logs") / f"toolchain-{args.cuda}.log")
        toolkit = probe_toolkit(root)
        if toolkit is None:
            raise ToolchainError(f"the toolkit installed at {root} does not answer as a CUDA toolkit")
        data = {"version": toolkit.version, "root": str(root), "archs": list(toolkit.archs)}
        out.emit(data, lambda: out.line(f"CUDA {toolkit.version} ready at {root}"))
        return 0
    rows = [{"version": t.version, "root": str(t.root), "provisioned": cache.root in t.root.parents,
             "archs": list(t.archs)} for t in ws.toolkits()]

    def render() -> None:
        table = Table("CUDA", "root", "provisioned", "archs")
        for row in rows:
            table.add_row(str(row["version"]), str(row["root"]), "yes" if row["provisioned"] else "",
                          " ".join(row["archs"]))  # type: ignore[arg-type]
        out.console.print(table if rows else "no CUDA toolkit found; try `builder toolchain install 13.0`")
    out.emit(rows, render)
    return 0


def cmd_stats(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    name = ws.recipes.load(args.recipe).name if args.recipe.endswith(".toml") else args.recipe
    found = records.for_recipe(ws.cache, name)
    if not found:
        raise UsageError(f"no compile records for {name} in {ws.cache.root}",
                         hint=f"builder build {args.recipe} records them (a build through sccache records none, "
                              "unless it ran on a farm)")
    if args.export:
        measured = [c for c in found if not c.farm]  # a farm build's CPU and memory are sccache's client's
        if not measured:
            raise UsageError(f"no compile costs of {name} to export, only records of builds on a farm",
                             hint=f"builder build {args.recipe} without a farm records them")
        if measured[0].unfinished:
            raise UsageError(f"the newest build of {name} did not finish: its records cover "
                             f"{len(measured[0].files)} file(s) of it", hint=f"builder build {args.recipe} to the end, "
                             "then export its records")
        return export_stats(measured[0], Path(args.export), out)
    shown = found if args.all else found[:1]
    data = [{**c.summary(), "key": c.key, "version": c.version, "archs": c.archs, "cuda": c.cuda, "host": c.host,
             "jobs": c.jobs, "cores": c.cores, "memory_budget_gb": c.memory_budget_gb, "farm": c.farm or None,
             "slowest": [asdict(f) for f in sorted(c.files, key=lambda f: -f.wall_s)[:args.top]]} for c in shown]

    def render() -> None:
        from builder.building.costs import describe

        for c in shown:
            slowest = sorted(c.files, key=lambda f: -f.wall_s)[:args.top]
            title = f"{name} {c.version} for sm_{','.join(c.archs) or '-'}, CUDA {c.cuda}, {c.host}"
            if c.farm:
                out.line(f"{title}: {len(c.files)} compile(s) on the farm {c.farm}, {c.wall_s:.1f} s")
                table = Table("file", "wall s", "waited s", "steps on the farm's servers")
                for f in slowest:
                    table.add_row(f.file, f"{f.wall_s:.1f}", f"{f.waited_s:.1f}", f.ran_on() or "none")
            else:
                out.line(f"{title}: {describe(c)}; {c.cpu_s:.0f} CPU-s on {c.jobs} job(s) of {c.cores} cores, "
                         f"budget {c.memory_budget_gb:g} GB")
                table = Table("file", "wall s", "CPU s", "peak MB", "threads", "waited s")
                for f in slowest:
                    table.add_row(f.file, f"{f.wall_s:.1f}", f"{f.cpu_s:.1f}", f"{f.peak_mb:.0f}", str(f.threads),
                                  f"{f.waited_s:.1f}")
            out.console.print(table)
    out.emit(data, render)
    return 0


def export_stats(costs: BuildCosts, path: Path, out: Output) -> int:
    """`builder stats RECIPE --export PATH`: the newest build's costs into a reference costs file."""
    measurement = reference.export(costs, path)
    data = {"exported": str(path), "recipe": costs.recipe, "version": costs.version, "archs": costs.archs,
            "cuda": costs.cuda, "files": len(measurement["files"])}
    out.emit(data, lambda: out.line(f"{costs.recipe} {costs.version} for sm_{','.join(costs.archs) or '-'}, "
                                    f"CUDA {costs.cuda}: {data['files']} file(s) written to {path}"))
    return 0
