"""The build pipeline, written once: plan -> fetch -> patch -> build -> package -> store ->
install -> verify. Backends supply only the build step; the stages' modules do the work, this
module puts them in order.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename
from packaging.version import Version

from builder import __version__
from builder.building import costs, reference
from builder.building.backends import Backend, get_backend
from builder.building.compile import Compiled, build_env, compile_wheel
from builder.building.patching import apply_patches
from builder.building.pins import PinChange, preview, read_text, rewrite_tree
from builder.building.source import extract
from builder.building.workdir import check_build_path, workdir
from builder.delivery.destination import Destination, choose_destination, install_and_verify
from builder.errors import BuilderError, BuildError, CacheError, RecipeError, UsageError
from builder.planning.buildpython import build_python
from builder.planning.plan import Plan, choose_backend, choose_version, resolve_plan
from builder.planning.provision import install_toolchain
from builder.planning.recipe import Recipe
from builder.planning.request import Request
from builder.planning.source_spec import source_identity, with_override
from builder.planning.toolchain import parse_cuda
from builder.planning.variants import check_variant_names
from builder.reporting import Steps
from builder.store import records
from builder.store.cache import Cache, Entry
from builder.store.compare import Comparison, compare_wheels
from builder.store.platform_tag import wheel_platform_tag
from builder.store.remote import RemoteStore, open_store, pull, push
from builder.store.retag import retag
from builder.workspace import Workspace


@dataclass
class BuildResult:
    """What `build` did: the plan, the cache entry it made or found, the install and its proof."""

    plan: Plan
    entry: Entry
    cache_hit: bool
    installed_into: Path | None = None
    verified: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    origin: str | None = None
    """Where a hit came from: "local cache" or the shared cache's URL; None for a fresh build."""
    remote: dict[str, Any] = field(default_factory=dict)
    """What happened with --cache-url: url, pulled, pushed, warning."""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    companions: list[BuildResult] = field(default_factory=list)
    """The recipe's companions, built (or found) and installed before it."""

    def to_json(self) -> dict[str, Any]:
        return {
            "cache_key": self.entry.key, "cache_hit": self.cache_hit, "origin": self.origin,
            "remote": self.remote,
            "wheel": str(self.entry.wheel), "sha256": self.entry.sha256,
            "installed_into": str(self.installed_into) if self.installed_into else None,
            "verified": self.verified, "log": str(self.log_path) if self.log_path else None,
            "seconds": round(self.seconds, 1), "timings": self.timings, "plan": self.plan.to_json(),
            "companions": [companion.to_json() for companion in self.companions],
            "costs": (self.entry.meta.get("costs") or {}).get("summary"), "sccache": self.entry.meta.get("sccache"),
        }


def prepare(request: Request, ws: Workspace, *, make_env: bool, companion_of: tuple[str, ...] = ()) -> Plan:
    """Resolve a Plan; with make_env a --torch build env is made (and --provision installs a
    missing toolkit), else both are only planned. `companion_of` is the chain of recipes whose
    companion this one is (a cycle among them is refused)."""
    request = ws.complete(request)
    recipe = ws.recipes.load(request.recipe)
    chain = (*companion_of, recipe.name)
    # What can be refused without a probe is refused first: a malformed --cuda, an unknown
    # --version, a --variant the recipe does not declare.
    wanted_cuda = parse_cuda(request.cuda) if request.cuda is not None else None
    request = dataclasses.replace(request, cuda=wanted_cuda)
    if request.version is not None:
        recipe.source_for(request.version)
    check_variant_names(recipe.variants, request.variants, recipe.name)
    python = build_python(request, recipe, ws.cache.path("envs"), ws.cache.path("logs"), make_env=make_env,
                          package_index=lambda: ws.settings.source_index, environ=ws.environ, say=ws.reporter.say,
                          default_cuda=ws.torch_cuda)
    toolkits = ws.toolkits()
    wanted = wanted_cuda or python.target.torch_cuda
    if make_env and request.provision and wanted and "." in wanted and not any(t.short == wanted for t in toolkits):
        ws.reporter.say(f"==> provision CUDA {wanted}")
        install_toolchain(wanted, ws.cache.dir("toolchains"), ws.cache.dir("logs") / f"toolchain-{wanted}.log")
        toolkits = ws.toolkits()
    this_environment = python.kind == "existing"
    version, notes = choose_version(request, recipe, python.target, toolkits, this_environment=this_environment)
    request = dataclasses.replace(request, version=version)
    spec = with_override(recipe.versions[version], request.source, f"{recipe.name} {version}")
    companions = {name: companion_version(companion_request(request, recipe, name), ws, name, chain)
                  if request.companions else None for name in recipe.deps.companions}
    backend = get_backend(choose_backend(recipe, version, request.install_mode))
    return resolve_plan(request, recipe, python.target, source=spec,
                        source_sha256=source_identity(spec, recipe.cc.inputs()),
                        build_env=python.describe(), install_python=python.install_python, toolkits=toolkits,
                        companions=companions, environ=ws.environ, gated=backend.gated, notes=notes + python.notes)


def companion_request(request: Request, parent: Recipe, name: str) -> Request:
    """The same target (python, torch, CUDA, archs) for a companion recipe, at its default version;
    the companion's recipe is the one beside its parent's when there is one, else the shipped one."""
    beside = parent.path.parent / f"{name}.toml" if parent.path is not None else None
    recipe = str(beside) if beside is not None and beside.is_file() else name
    return dataclasses.replace(request, recipe=recipe, version=None, source=None, install_mode="auto",
                               install_dir=None)


def companion_version(request: Request, ws: Workspace, name: str, chain: tuple[str, ...] = ()) -> str:
    """The exact version builder's build of a companion will have, from its plan; a companion that
    cannot be planned stops its parent before anything compiles, and so does a cycle of them."""
    if name in chain:
        raise RecipeError(f"companions form a cycle: {' -> '.join((*chain[chain.index(name):], name))}",
                          hint=f"remove {name} from the companions of {chain[-1]} ([deps] companions)")
    try:
        plan = prepare(request, ws, make_env=False, companion_of=chain)
    except BuilderError as exc:
        if exc.message.startswith("companions form a cycle"):
            raise
        exc.message = f"companion {name}: {exc.message}"
        exc.args = (exc.message,)
        exc.hint = f"{exc.hint + '; or ' if exc.hint else ''}--no-companions drops it"
        raise
    return f"{plan.version}+{plan.local_version}"


def build_companion(request: Request, name: str, version: str, ws: Workspace) -> BuildResult:
    """Build (or find) and install a companion before its parent, at the version the parent pins."""
    ws.reporter.say(f"==> companion {name} {version}")
    result = build(request, ws)
    built = parse_wheel_filename(result.entry.wheel.name)[1]
    if built != Version(version):
        raise BuildError(f"companion {name} was built as {built}, but its parent pins {version}")
    return result


def pin_preview(plan: Plan, ws: Workspace) -> list[PinChange]:
    """What rewriting the pins will change, read from the (fetched, unpatched) source."""
    if not plan.recipe.deps.rewrite:
        return []
    archive = ws.fetch(plan.source)
    with tempfile.TemporaryDirectory(dir=ws.cache.dir("staging")) as tmp:
        src = extract(archive, Path(tmp) / "src")
        return preview({name: read_text(src / name) for name in plan.recipe.deps.rewrite},
                       plan.requirement_rules())


def environment_notes(plan: Plan) -> list[str]:
    """What the build takes from the user's environment into its key, and what it drops."""
    notes = [f"from your environment (in the cache key): {name}={value}"
             for name, value in plan.inherited.keyed.items()]
    notes += [f"note: {name} from your environment is not passed to the build: {why}"
              for name, why in plan.inherited.dropped.items()]
    return notes


def compile_to_wheel(plan: Plan, backend: Backend, ws: Workspace, steps: Steps, log_path: Path,
                     out_dir: Path) -> tuple[Path, Compiled]:
    """Fetch, patch, build and re-tag into `out_dir`, in the first free of the plan's build folders;
    the work dir goes only when all of it worked."""
    cache = ws.cache
    if plan.build_env.get("kind") == "venv":  # torch's headers are under it: nvcc gets them as -I
        check_build_path(plan.target.python_exe.parent.parent, "the build venv",
                         "use a cache directory whose path has no comma")
    with steps("fetch"):
        archive = ws.fetch(plan.source)
    with workdir([ws.work_dir(folder) for folder in plan.build_folders], ws.reporter) as work:
        src = extract(archive, work / "src")
        if plan.patches:
            with steps("patch", f"apply {len(plan.patches)} patch(es)"):
                apply_patches(plan.patches, src)
        if plan.recipe.deps.rewrite:
            with steps("pins", "rewrite dependency pins"):
                for change in rewrite_tree(src, plan.recipe.deps.rewrite, plan.requirement_rules()):
                    ws.reporter.say(f"    {change.describe()}")
        compiled = Compiled()
        env = build_env(plan, backend, cache.dir("sccache"), work)
        try:
            previous = starting_costs(plan, cache)
            raw = compile_wheel(plan, backend, src, work, env, log_path, steps, previous=previous, compiled=compiled)
        finally:
            if compiled.costs is not None:
                finished = compiled.wheel is not None
                records.save(cache, dataclasses.replace(compiled.costs, unfinished=not finished))
        with steps("retag", "re-tag the wheel"):
            tag = wheel_platform_tag(raw)
            wheel = retag(raw, out_dir, local=plan.local_version, rules=plan.requirement_rules(),
                          provenance=plan.provenance(__version__), platform=tag)
            ws.reporter.say(f"    platform tag {tag or 'unchanged (no shared objects)'}: "
                            "what the shared objects' symbol versions allow")
    return wheel, compiled


def starting_costs(plan: Plan, cache: Cache) -> costs.BuildCosts | None:
    """What a build's gate and ordering start from: this cache's records of its kind, else the
    recipe's reference. Through sccache the reference alone: the gate splits from it, and that choice
    must be the same on every machine sharing the store (a build through sccache records no costs
    of its own, its compilers run in sccache's server)."""
    if plan.ccache:
        return reference.for_plan(plan)
    return records.starting(cache, costs.costs_key(plan), reference.for_plan(plan))


def compile_and_store(plan: Plan, backend: Backend, ws: Workspace, steps: Steps, log_path: Path) -> Entry:
    """Fetch, patch, build, re-tag and store."""
    cache = ws.cache
    with tempfile.TemporaryDirectory(prefix=f"dist-{plan.key[:12]}-", dir=cache.dir("staging")) as dist:
        wheel, compiled = compile_to_wheel(plan, backend, ws, steps, log_path, Path(dist))
        with steps("store", "store the wheel"):
            meta: dict[str, Any] = {"recipe": plan.recipe.name, "version": plan.version, "plan": plan.to_json(),
                                    "log": str(log_path), "built_by": built_by()}
            if compiled.costs is not None:
                meta["costs"] = compiled.costs.to_json()
            if compiled.sccache:
                meta["sccache"] = compiled.sccache
            return cache.store(plan.key, wheel, meta)


def built_by() -> dict[str, str]:
    """Who built an entry, and on which machine (the cache's page shows it; no part of the key)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname()}


@dataclass
class CheckResult:
    """`build --check`: a cached build done again in a fresh work directory, and the two compared."""

    plan: Plan
    entry: Entry
    rebuilt: Path
    comparison: Comparison
    log_path: Path

    def to_json(self) -> dict[str, Any]:
        return {"cache_key": self.entry.key, "wheel": str(self.entry.wheel), "rebuilt": str(self.rebuilt),
                "reproducible": self.comparison.identical, "log": str(self.log_path),
                **{k: v for k, v in self.comparison.to_json().items() if k not in ("first", "second")}}


def check(request: Request, ws: Workspace) -> CheckResult:
    """Rebuild the cache entry `request` plans (it must exist) in a fresh work directory (at the
    path every build of the key uses: nvcc hashes it into names) and compare the new wheel with
    the stored one file by file. Nothing is stored or installed; the rebuilt wheel stays in
    cache/checks/<key>/ to inspect. sccache stays off: a rebuild from its hits would prove nothing."""
    steps = Steps(ws.reporter)
    request = dataclasses.replace(ws.complete(request), ccache=False)
    with steps("plan", "resolve plan"):
        plan = prepare(request, ws, make_env=True)
        for line in environment_notes(plan):
            ws.reporter.say(f"    {line}")
    entry = ws.cache.get(plan.key)
    if entry is None:
        raise UsageError(f"{plan.recipe.name} {plan.version} for this target is not in the cache (key {plan.key}): "
                         "nothing to check", hint="build it first, with the same options, without --check")
    out_dir = ws.cache.dir("checks") / plan.key
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    log_path = log_path_for(plan, ws)
    rebuilt, _ = compile_to_wheel(plan, get_backend(plan.backend), ws, steps, log_path, out_dir)
    with steps("compare", "compare with the stored wheel"):
        comparison = compare_wheels(ws.cache.verified_wheel(entry), rebuilt)
    return CheckResult(plan, entry, rebuilt, comparison, log_path)


def log_path_for(plan: Plan, ws: Workspace) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return ws.cache.dir("logs") / f"{plan.recipe.name}-{plan.version}-{plan.key[:12]}-{stamp}.log"


def build(request: Request, ws: Workspace) -> BuildResult:
    """Build (or find in the local or shared cache) the requested wheel, install and verify it,
    then upload it to the shared cache. An unreachable shared cache on lookup is a warning; a
    failed upload is an error raised last, after the local entry is stored and installed."""
    start = time.monotonic()
    steps = Steps(ws.reporter)
    request = ws.complete(request)
    store = open_store(request.cache_url) if request.cache_url else None
    with steps("plan", "resolve plan"):
        plan = prepare(request, ws, make_env=True)
        for note in plan.notes:
            ws.reporter.say(f"    {note}")
        backend = get_backend(plan.backend)
        destination = choose_destination(request, plan)
        for line in environment_notes(plan):
            ws.reporter.say(f"    {line}")
    companions = [build_companion(companion_request(request, plan.recipe, name), name, version, ws)
                  for name, version in plan.companions.items() if version is not None]
    log_path: Path | None = None
    remote: dict[str, Any] = {"url": store.url} if store else {}
    # A local hit is read without the lock (entries appear by one rename), so a cache this user
    # cannot write still serves what it holds; anything else happens under the key's lock.
    entry = None if plan.force else local_entry(plan.key, ws)
    origin = "local cache" if entry else None
    if entry is None:
        ws.cache.check_writable()
        with ws.cache.lock(plan.key, say=ws.reporter.say):
            entry = None if plan.force else local_entry(plan.key, ws)  # built meanwhile by the lock's holder
            origin = "local cache" if entry else None
            if entry is None and store is not None and not plan.force:
                entry = pull_or_warn(store, plan.key, ws, steps, remote)
                origin = store.url if entry else None
            if entry is None:
                log_path = log_path_for(plan, ws)
                entry = compile_and_store(plan, backend, ws, steps, log_path)
                ws.reporter.say(f"    stored {entry.wheel.name} (key {plan.key})")
    if origin is not None:
        ws.reporter.say(f"==> cache hit ({origin}): {entry.wheel.name} (key {plan.key})")
    result = BuildResult(plan=plan, entry=entry, cache_hit=origin is not None, log_path=log_path,
                         origin=origin, remote=remote, companions=companions)
    if destination is not None:
        deliver(result, backend, ws, steps, destination)
    if store is not None and store.writable and origin != store.url:
        upload(store, entry, ws, steps, remote)
    result.seconds = time.monotonic() - start
    result.timings = dict(steps.timings)
    return result


def local_entry(key: str, ws: Workspace) -> Entry | None:
    """The local cache's entry of `key`, its wheel's sha256 checked (every hit, installed or
    not); a corrupt one (entry.json or wheel) is said and built again (the new entry replaces it)."""
    try:
        entry = ws.cache.get(key)
        if entry is not None:
            ws.cache.verified_wheel(entry)
        return entry
    except CacheError as exc:
        ws.reporter.say(f"    warning: {exc.message}; building it again")
        return None


def deliver(result: BuildResult, backend: Backend, ws: Workspace, steps: Steps, destination: Destination) -> None:
    result.verified = install_and_verify(result.plan, backend, result.entry, ws.cache, steps, destination)
    result.installed_into = destination.path
    for note in result.verified.get("retried", []):
        ws.reporter.say(f"    {note}")


def pull_or_warn(store: RemoteStore, key: str, ws: Workspace, steps: Steps, remote: dict[str, Any]) -> Entry | None:
    """The shared entry, pulled and checked; a store that fails is a warning (build locally)."""
    try:
        with steps("pull", f"look up {store.url}"):
            entry = pull(store, key, ws.cache)
    except CacheError as exc:
        remote["warning"] = exc.message
        ws.reporter.say(f"    warning: {exc.message}; building locally")
        return None
    remote["pulled"] = entry is not None
    return entry


def upload(store: RemoteStore, entry: Entry, ws: Workspace, steps: Steps, remote: dict[str, Any]) -> None:
    """Push a finished entry; when that fails, the local entry stays and the error says so."""
    try:
        with steps("push", f"upload to {store.url}"):
            remote["pushed"] = push(store, entry, ws.cache)
    except CacheError as exc:
        raise CacheError(f"built and stored locally (key {entry.key}), but the upload failed: {exc.message}",
                         hint=f"retry with `builder cache push {entry.key} --cache-url {store.url}`") from exc
