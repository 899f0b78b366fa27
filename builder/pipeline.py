"""The build pipeline, written once: plan -> fetch -> patch -> build -> package -> store ->
install -> verify. Backends supply only the build step.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename
from packaging.version import Version

from builder import __version__, costs, sccache
from builder.artifacts import check_writable, install_artifacts, installed_package_dir, locate_package
from builder.backends import get_backend
from builder.backends.native import outputs as native_outputs
from builder.buildpython import build_python
from builder.cache import Cache, Entry
from builder.errors import BuilderError, BuildError, CacheError, SourceError, UsageError, VerifyError
from builder.install import install_wheel
from builder.patching import apply_patches
from builder.pins import PinChange, PinRules, preview, read_text, rewrite_tree
from builder.plan import Plan, Request, resolve_plan
from builder.progress import CompileProgress, StepReporter
from builder.provision import install_toolchain
from builder.provision_pypi import provisioned_roots
from builder.recipe import Recipe, load_recipe
from builder.remote import RemoteStore, open_store, pull, push
from builder.source import SourceSpec, extract, fetch, sha256_of, source_identity
from builder.toolchain import Toolkit, discover_toolkits
from builder.verify import run_check_script, verify_install, verify_libraries
from builder.wheel import RequirementRules, retag


@dataclass
class BuildResult:
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


def source_spec(recipe: Recipe, version: str, override: str | None) -> SourceSpec:
    """The recipe's source for `version`, or --source in its place (sha256 kept for archives)."""
    _, spec = recipe.source_for(version)
    if override is None:
        if spec.local is not None:
            raise SourceError(f"{recipe.name} {version} has no download: pass --source with {spec.local}")
        return spec
    path = Path(override).expanduser().resolve()
    if not path.exists():
        raise SourceError(f"--source {override}: no such file or directory")
    return SourceSpec(path=str(path), sha256=None if path.is_dir() else spec.sha256)


def prepare(request: Request, cache: Cache, *, make_env: bool,
            reporter: StepReporter | None = None) -> Plan:
    """Resolve a Plan; with make_env a --torch build env is made, else only planned."""
    recipe = load_recipe(request.recipe)
    version, _ = recipe.source_for(request.version)
    spec = source_spec(recipe, version, request.source)
    python = build_python(request, recipe, cache.dir("envs"), cache.dir("logs"), make_env=make_env,
                          say=reporter.say if reporter else None)
    toolkits = machine_toolkits(cache)
    wanted = request.cuda or python.target.torch_cuda
    if make_env and request.provision and wanted and not any(t.short == wanted for t in toolkits):
        if reporter:
            reporter.say(f"==> provision CUDA {wanted}")
        install_toolchain(wanted, cache.dir("toolchains"), cache.dir("logs") / f"toolchain-{wanted}.log")
        toolkits = machine_toolkits(cache)
    identity = source_identity(spec, recipe.cc.inputs())
    companions = {name: companion_version(companion_request(request, recipe, name), cache, name)
                  if request.companions else None for name in recipe.deps.companions}
    return resolve_plan(request, recipe, python.target, source=spec, source_sha256=identity,
                        build_env=python.describe(), install_python=python.install_python, toolkits=toolkits,
                        companions=companions)


def companion_request(request: Request, parent: Recipe, name: str) -> Request:
    """The same target (python, torch, CUDA, archs) for a companion recipe, at its default version;
    the companion's recipe is the one beside its parent's when there is one, else the shipped one."""
    beside = parent.path.parent / f"{name}.toml" if parent.path is not None else None
    recipe = str(beside) if beside is not None and beside.is_file() else name
    return dataclasses.replace(request, recipe=recipe, version=None, source=None, install_mode="auto",
                               install_dir=None)


def companion_version(request: Request, cache: Cache, name: str) -> str:
    """The exact version builder's build of a companion will have, from its plan; a companion that
    cannot be planned stops its parent before anything compiles."""
    try:
        plan = prepare(request, cache, make_env=False)
    except BuilderError as exc:
        exc.message = f"companion {name}: {exc.message}"
        exc.args = (exc.message,)
        exc.hint = f"{exc.hint + '; or ' if exc.hint else ''}--no-companions drops it"
        raise
    return f"{plan.version}+{plan.local_version}"


def build_companion(request: Request, name: str, version: str, cache: Cache,
                    reporter: StepReporter) -> BuildResult:
    """Build (or find) and install a companion before its parent, at the version the parent pins."""
    reporter.say(f"==> companion {name} {version}")
    result = build(request, cache, reporter)
    built = parse_wheel_filename(result.entry.wheel.name)[1]
    if built != Version(version):
        raise BuildError(f"companion {name} was built as {built}, but its parent pins {version}")
    return result


def machine_toolkits(cache: Cache) -> list[Toolkit]:
    """The toolkits on this machine plus those provisioned into the cache."""
    return discover_toolkits(extra_roots=provisioned_roots(cache.dir("toolchains")))


@contextmanager
def workdir(path: Path, reporter: StepReporter) -> Iterator[Path]:
    """A fresh build directory: removed on success, kept (and named) on failure."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    except BaseException:
        reporter.say(f"    build directory kept for inspection: {path}")
        raise
    shutil.rmtree(path, ignore_errors=True)


def build_env(plan: Plan, cache: Cache, work: Path) -> dict[str, str]:
    """The inherited environment plus the plan's variables (and sccache with --ccache)."""
    env = {**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"}
    if plan.ccache:
        env = sccache.sccache_env(plan.env["BUILDER_SCCACHE"], cache.dir("sccache"), work, env)
    return env


def provenance(plan: Plan) -> dict[str, Any]:
    return {
        "builder": __version__, "recipe": plan.recipe.name, "version": plan.version,
        "source_sha256": plan.source_sha256,
        "patches": {p.file: sha256_of(p.path) for p in plan.patches},
        "torch": plan.torch_version, "torch_cuda": plan.target.torch_cuda,
        "cuda": plan.toolkit.version, "host_compiler": f"{plan.host.cxx} ({plan.host.major})",
        "archs": [str(a) for a in plan.archs], "cxx11_abi": plan.cxx11_abi, "variants": dict(plan.variants),
        "cxx_std": plan.cxx_std, "python": plan.target.python_tag,
        "platform": plan.target.platform, "env": dict(plan.env), "cache_key": plan.key,
    }


def pin_rules(plan: Plan) -> PinRules:
    """The recipe's [deps] rules with the target's versions filled in: companions pinned to the
    exact version builder builds for them, or dropped with --no-companions."""
    pins = {name: plan.torch_version.split("+")[0] for name in plan.recipe.deps.pin_to_target}
    pins.update({name: version for name, version in plan.companions.items() if version is not None})
    dropped = tuple(name for name, version in plan.companions.items() if version is None)
    return PinRules.make(plan.recipe.deps.drop + dropped, pins)


def pin_preview(plan: Plan, cache: Cache) -> list[PinChange]:
    """What rewriting the pins will change, read from the (fetched, unpatched) source."""
    if not plan.recipe.deps.rewrite:
        return []
    archive = fetch(plan.source, cache.dir("sources"))
    with tempfile.TemporaryDirectory(dir=cache.dir("staging")) as tmp:
        src = extract(archive, Path(tmp) / "src")
        return preview({name: read_text(src / name) for name in plan.recipe.deps.rewrite}, pin_rules(plan))


def compile_and_store(plan: Plan, cache: Cache, reporter: StepReporter, log_path: Path) -> Entry:
    """Fetch, patch, build, re-tag and store; the work dir goes only when all of it worked."""
    get_backend(plan.backend)  # an unknown backend stops before the download
    check_build_path(cache.dir("build"))
    with reporter.step("fetch"):
        archive = fetch(plan.source, cache.dir("sources"))
    with workdir(cache.dir("build") / plan.key, reporter) as work:
        src = extract(archive, work / "src")
        if plan.patches:
            with reporter.step("patch", f"apply {len(plan.patches)} patch(es)"):
                apply_patches(plan.patches, src)
        if plan.recipe.deps.rewrite:
            with reporter.step("pins", "rewrite dependency pins"):
                for change in rewrite_tree(src, plan.recipe.deps.rewrite, pin_rules(plan)):
                    reporter.say(f"    {change.describe()}")
        recorded: dict[str, Any] = {}
        raw = run_backend(plan, cache, src, work, log_path, reporter, recorded)
        with reporter.step("store", "re-tag and store the wheel"):
            pins = pin_rules(plan)
            rules = RequirementRules(drop=tuple(pins.drop), pin=dict(pins.pin))
            wheel = retag(raw, work / "dist", local=plan.local_version, rules=rules, provenance=provenance(plan),
                          platform=plan.target.platform)
            meta = {"recipe": plan.recipe.name, "version": plan.version, "plan": plan.to_json(),
                    "log": str(log_path), **recorded}
            return cache.store(plan.key, wheel, meta)


def run_backend(plan: Plan, cache: Cache, src: Path, work: Path, log_path: Path, reporter: StepReporter,
                recorded: dict[str, Any]) -> Path:
    """The backend's build behind the compile gate (and through sccache with --ccache); what the
    build recorded goes into `recorded` (costs, sccache counts), even when it fails."""
    archs = ", ".join(a.sm for a in plan.archs) or "no GPU arch"
    step = f"compile with {plan.jobs.jobs} job(s) for {archs} (log: {log_path})"
    env = build_env(plan, cache, work)
    if plan.jobs.gated:
        env = costs.instrument(plan, cache, work, src, env)
    try:
        with reporter.step("compile", step), CompileProgress(plan.recipe.name, quiet=reporter.quiet) as progress:
            return get_backend(plan.backend).build(plan, src, work / "raw", env, log_path, progress.on_line)
    finally:
        # Through sccache the compilers run in its server, out of the gate's sight: no records.
        records = costs.collect(plan, work) if not plan.ccache else None
        if records is not None:
            costs.save(cache, records)
            recorded["costs"] = records.to_json()
            reporter.say(f"    {costs.describe(records)} (builder stats {plan.recipe.name})")
        if plan.ccache:
            recorded["sccache"] = sccache.finish(plan.env["BUILDER_SCCACHE"], env)
            reporter.say(f"    {sccache.describe(recorded['sccache'])}")


def check_build_path(path: Path) -> None:
    """nvcc splits option values at commas (-I paths included), so a build under such a path fails
    late with a missing header; refuse it up front."""
    if "," in str(path.resolve()):
        raise UsageError(f"the build directory {path} contains a comma, which nvcc takes as a list separator",
                         hint="use a --cache directory whose path has no comma")


def log_path_for(plan: Plan, cache: Cache) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return cache.dir("logs") / f"{plan.recipe.name}-{plan.version}-{plan.key[:12]}-{stamp}.log"


def build(request: Request, cache: Cache, reporter: StepReporter) -> BuildResult:
    """Build (or find in the local or shared cache) the requested wheel, install and verify it,
    then upload it to the shared cache. An unreachable shared cache on lookup is a warning; a
    failed upload is an error raised last, after the local entry is stored and installed."""
    start = time.monotonic()
    store = open_store(request.cache_url) if request.cache_url else None
    with reporter.step("plan", "resolve plan"):
        plan = prepare(request, cache, make_env=True, reporter=reporter)
        destination = install_destination(request, plan) if request.install else None
    companions = [build_companion(companion_request(request, plan.recipe, name), name, version, cache, reporter)
                  for name, version in plan.companions.items() if version is not None]
    log_path: Path | None = None
    remote: dict[str, Any] = {"url": store.url} if store else {}
    with cache.lock(plan.key):
        entry = None if plan.force else cache.get(plan.key)
        origin = "local cache" if entry else None
        if entry is None and store is not None and not plan.force:
            entry = pull_or_warn(store, plan.key, cache, reporter, remote)
            origin = store.url if entry else None
        if entry is None:
            log_path = log_path_for(plan, cache)
            entry = compile_and_store(plan, cache, reporter, log_path)
            reporter.say(f"    stored {entry.wheel.name} (key {plan.key})")
        else:
            reporter.say(f"==> cache hit ({origin}): {entry.wheel.name} (key {plan.key})")
    result = BuildResult(plan=plan, entry=entry, cache_hit=origin is not None, log_path=log_path,
                         origin=origin, remote=remote, companions=companions)
    if destination is not None:
        install_and_verify(result, cache, reporter, destination)
    if store is not None and store.writable and origin != store.url:
        upload(store, entry, cache, reporter, remote)
    result.seconds = time.monotonic() - start
    result.timings = dict(reporter.timings)
    return result


def pull_or_warn(store: RemoteStore, key: str, cache: Cache, reporter: StepReporter,
                 remote: dict[str, Any]) -> Entry | None:
    """The shared entry, pulled and checked; a store that fails is a warning (build locally)."""
    try:
        with reporter.step("pull", f"look up {store.url}"):
            entry = pull(store, key, cache)
    except CacheError as exc:
        remote["warning"] = exc.message
        reporter.say(f"    warning: {exc.message}; building locally")
        return None
    remote["pulled"] = entry is not None
    return entry


def upload(store: RemoteStore, entry: Entry, cache: Cache, reporter: StepReporter,
           remote: dict[str, Any]) -> None:
    """Push a finished entry; when that fails, the local entry stays and the error says so."""
    try:
        with reporter.step("push", f"upload to {store.url}"):
            remote["pushed"] = push(store, entry, cache)
    except CacheError as exc:
        raise CacheError(f"built and stored locally (key {entry.key}), but the upload failed: {exc.message}",
                         hint=f"retry with `builder cache push {entry.key} --cache-url {store.url}`") from exc


def install_destination(request: Request, plan: Plan) -> tuple[str, Path] | None:
    """How and where the build will be installed, settled (and checked writable) before anything
    compiles: ("wheel", the target interpreter) or ("artifacts", a directory); None for no install."""
    python = plan.install_python
    if python is None:
        return None
    if install_mode(request, plan.recipe, python) != "artifacts":
        return "wheel", python
    dest = artifacts_dir(request, plan, python)
    check_writable(dest)
    return "artifacts", dest


def install_and_verify(result: BuildResult, cache: Cache, reporter: StepReporter,
                       destination: tuple[str, Path]) -> None:
    plan = result.plan
    mode, path = destination
    if mode == "artifacts":
        install_artifacts_and_verify(result, cache, reporter, path)
        return
    python = path
    with reporter.step("install", f"install into {python}"):
        wheel = cache.verified_wheel(result.entry)
        install_wheel(wheel, python, log_path=cache.dir("logs") / "install.log")
        cache.record_install(python, result.entry)
    result.installed_into = python
    with reporter.step("verify"):
        result.verified = verify_install(plan, python)
        if plan.backend in plan.recipe.native:
            result.verified.update(verify_libraries(plan, python, installed_libraries(plan, python)))
        module = plan.recipe.wheel
        if module is not None and plan.backend == module.backend and plan.recipe.verify.artifact_check:
            result.verified["module_check"] = run_check_script(plan, python, ["--module", module.module])


def install_mode(request: Request, recipe: Recipe, python: Path) -> str:
    """The mode asked for; "auto" is artifacts for a recipe whose libraries go into a directory,
    or into a package the target already has, and a wheel otherwise."""
    artifacts = recipe.artifacts
    if request.install_mode == "auto":
        if artifacts is None:
            return "wheel"
        if artifacts.package:
            return "artifacts" if locate_package(python, artifacts.package)[0] is not None else "wheel"
        return "artifacts"
    if request.install_mode == "artifacts" and artifacts is None:
        raise UsageError(f"{recipe.name} builds no libraries to install as artifacts",
                         hint="use --install-mode wheel")
    return request.install_mode


def artifacts_dir(request: Request, plan: Plan, python: Path) -> Path:
    """--install-dir; else the target's installed package the recipe names; else the --source
    directory when it holds the recipe's marker file."""
    recipe = plan.recipe
    if request.install_dir:
        return Path(request.install_dir).expanduser().resolve()
    artifacts = recipe.artifacts
    if artifacts is not None and artifacts.package:
        return installed_package_dir(python, artifacts.package, plan.version)
    beside = artifacts.beside if artifacts else ""
    source = Path(request.source).expanduser().resolve() if request.source else None
    if source is not None and beside and (source / beside).is_file():
        return source
    raise UsageError(f"where should {recipe.name}'s libraries go?",
                     hint="pass --install-dir DIR" + (f" (or a --source directory holding {beside})" if beside else ""))


def artifact_members(plan: Plan) -> list[str]:
    """Where the libraries sit in the build's wheel: the cc outputs in their package, or the
    native build's outputs."""
    if plan.backend in plan.recipe.native:
        return native_outputs(plan)
    return [f"{plan.recipe.cc.package}/{name}" for name in plan.recipe.cc.outputs]


def installed_libraries(plan: Plan, python: Path) -> list[Path]:
    """The native outputs where the wheel install put them in `python`."""
    libraries = []
    for output in native_outputs(plan):
        package, _, rest = output.partition("/")
        folder, _ = locate_package(python, package)
        if folder is None:
            raise VerifyError(f"{package} is not importable from {python} after the install")
        libraries.append(folder / rest)
    return libraries


def install_artifacts_and_verify(result: BuildResult, cache: Cache, reporter: StepReporter, dest: Path) -> None:
    plan = result.plan
    with reporter.step("install", f"install libraries into {dest}"):
        wheel = cache.verified_wheel(result.entry)
        manifest = install_artifacts(wheel, artifact_members(plan), dest, recipe=plan.recipe.name,
                                     key=result.entry.key)
    result.installed_into = dest
    libraries = [dest / f["name"] for f in manifest["files"]]
    with reporter.step("verify"):
        python = plan.install_python or plan.target.python_exe
        result.verified = {"artifacts": [str(p) for p in libraries]}
        if plan.backend in plan.recipe.native:
            result.verified.update(verify_libraries(plan, python, libraries))
        if plan.recipe.verify.artifact_check:
            result.verified["artifact_check"] = run_check_script(plan, python, [str(p) for p in libraries])
