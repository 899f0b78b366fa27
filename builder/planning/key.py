"""The cache key: a content address over every input that can change a build's binary.

Two builds with equal keys must produce interchangeable wheels, because a shared cache hands one
out for the other. What changes the binary is in:
  - the source and every patch, by sha256;
  - the parts of the recipe that reach the build of that version (`recipe_inputs`): the build
    env templates, build requirements, nvcc_threads, kernels, the dependency rules (they change
    METADATA), the backend and its table ([cc], [make]/[cmake], [wheel]), and the definition of
    each chosen variant;
  - the target: python tag, platform, C library (glibc version), the exact torch and its CUDA,
    the C++ ABI;
  - the toolchain: the full nvcc version, the host compiler's full version, the C++ standard;
  - the archs, the chosen variants, the companions' exact versions;
  - the compile-affecting variables the user set (CFLAGS, NVCC_APPEND_FLAGS, CPATH, ...; the
    table in builder/planning/environment.py).
What cannot change it is out: job counts, the memory budget, job_memory_gb, paths of the
toolkit and interpreter, the recipe's description, requires and verify tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from builder.files import sha256_of, tree_sha256
from builder.planning.archs import Arch
from builder.planning.recipe import Patch, Recipe
from builder.planning.target import TargetInfo
from builder.planning.toolchain import HostCompiler, Toolkit

KEY_FORMAT = 3
"""Bumped when the meaning of a cache key changes, so old entries stop matching.
2: the user's compile-affecting variables, the whole recipe section, full gcc and glibc versions.
3: setuptools builds keep the interpreter's -O3 -DNDEBUG (builder/building/reproducible.py: before,
   a build without --ccache compiled its host code without them, one with --ccache with them)."""


def recipe_inputs(recipe: Recipe, backend: str, variants: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parts of a recipe that reach the build done by `backend`. Out: description,
    job_memory_gb (a scheduling estimate), requires (checks), verify and artifacts (what happens
    after the wheel exists), other versions' sources."""
    build = recipe.build
    inputs: dict[str, Any] = {
        "build": {"env": dict(sorted(build.env.items())), "backend": backend,
                  "requirements": list(build.requirements), "nvcc_threads": build.nvcc_threads,
                  "kernels": build.kernels},
        "deps": [list(recipe.deps.drop), list(recipe.deps.pin_to_target)]
        + ([list(recipe.deps.rewrite)] if recipe.deps.rewrite else []),
    }
    if backend == "cc":
        inputs["cc"] = {"outputs": {name: list(sources) for name, sources in sorted(recipe.cc.outputs.items())},
                        "flags": list(recipe.cc.flags), "package": recipe.cc.package}
    if backend in recipe.native:
        inputs["native"] = asdict(recipe.native[backend])
    if recipe.wheel is not None and backend == recipe.wheel.backend:
        inputs["wheel_project"] = tree_sha256(recipe.wheel.project_dir)
        inputs["wheel_sources"] = list(recipe.wheel.sources)
    if variants:
        inputs["variant_definitions"] = {
            name: {"env": dict(sorted(recipe.variants[name].env.items())),
                   "defines": list(recipe.variants[name].defines)} for name in sorted(variants)}
    return inputs


def digest(payload: Any, length: int) -> str:
    """The first `length` hex digits of the sha256 of `payload` as canonical JSON (sorted keys): the
    cache key, the sources' build folder, the costs' key and the `--torch` venvs' names."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def patch_hashes(patches: tuple[Patch, ...]) -> list[list[str]]:
    """Each patch's file name and its content's sha256, in order."""
    return [[p.file, sha256_of(p.path)] for p in patches]


def cache_key(recipe: Recipe, version: str, source_sha256: str, patches: tuple[Patch, ...],
              target: TargetInfo, toolkit: Toolkit, archs: tuple[Arch, ...], abi: bool,
              host: HostCompiler, cxx_std: str, backend: str,
              companions: Mapping[str, str | None] | None = None, variants: Mapping[str, str] | None = None,
              environment: Mapping[str, str] | None = None) -> str:
    """The key of one build; see the module's docstring for what is in and what is out."""
    payload = {
        "format": KEY_FORMAT,
        "recipe": recipe.name, "version": version, "source": source_sha256,
        "patches": patch_hashes(patches),
        **recipe_inputs(recipe, backend, variants),
        "python": target.python_tag, "platform": target.platform, "libc": target.libc,
        "torch": target.torch, "torch_cuda": target.torch_cuda,
        "cuda": toolkit.version, "archs": [str(a) for a in archs], "cxx11_abi": abi,
        "host_compiler": host.version, "cxx_std": cxx_std,
    }
    if companions:
        payload["companions"] = dict(companions)
    if variants:
        payload["variants"] = dict(variants)
    if environment:
        payload["environment"] = dict(sorted(environment.items()))
    return digest(payload, 24)


def source_folder(recipe: Recipe, version: str, source_sha256: str, patches: tuple[Patch, ...]) -> str:
    """The build folder of a build through sccache: named by what its files are compiled from, not by
    the whole key. nvcc passes each source's absolute path to cudafe++ and cicc
    (--orig_src_path_name), and sccache 0.16 hashes those arguments as they are (its cicc ARGS table
    lacks the flag; SCCACHE_BASEDIRS strips only the preprocessed text: src/compiler/c.rs
    HashKeyParams::compute), so the keys of a file's device steps hold its folder's path: under a
    folder per key, the cells of a matrix (another Python, another torch) never found each other's
    steps (bench/RESULTS.md, 2026-12-07)."""
    payload = {"recipe": recipe.name, "version": version, "source": source_sha256,
               "patches": patch_hashes(patches)}
    return f"{recipe.name}-{version}-{digest(payload, 12)}"
