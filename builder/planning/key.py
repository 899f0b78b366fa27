"""The cache key: a content address over every input that can change a build's binary.

Two builds with equal keys must produce interchangeable wheels, because a shared cache hands one
out for the other. What changes the binary is in (the source and patches by hash, the recipe's
sections that reach the build, the target's python/torch/ABI, the toolchain, the archs, the
variants); what cannot is out (job counts, the memory budget, paths, descriptions).
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

KEY_FORMAT = 1
"""Bumped when the meaning of a cache key changes, so old entries stop matching."""


def recipe_inputs(recipe: Recipe, backend: str) -> dict[str, Any]:
    """The parts of a recipe that reach the build done by `backend`."""
    inputs: dict[str, Any] = {
        "build": {"env": dict(sorted(recipe.build.env.items())), "backend": backend},
        "deps": [list(recipe.deps.drop), list(recipe.deps.pin_to_target)]
        + ([list(recipe.deps.rewrite)] if recipe.deps.rewrite else []),
    }
    if backend in recipe.native:
        inputs["native"] = asdict(recipe.native[backend])
    if recipe.wheel is not None and backend == recipe.wheel.backend:
        inputs["wheel_project"] = tree_sha256(recipe.wheel.project_dir)
    return inputs


def cache_key(recipe: Recipe, version: str, source_sha256: str, patches: tuple[Patch, ...],
              target: TargetInfo, toolkit: Toolkit, archs: tuple[Arch, ...], abi: bool,
              host: HostCompiler, cxx_std: str, backend: str,
              companions: Mapping[str, str | None] | None = None, variants: Mapping[str, str] | None = None) -> str:
    """The key of one build; see the module's docstring for what is in and what is out."""
    payload = {
        "format": KEY_FORMAT,
        "recipe": recipe.name, "version": version, "source": source_sha256,
        "patches": [[p.file, sha256_of(p.path)] for p in patches],
        **recipe_inputs(recipe, backend),
        "python": target.python_tag, "platform": target.platform,
        "torch": target.torch, "torch_cuda": target.torch_cuda,
        "cuda": toolkit.version, "archs": [str(a) for a in archs], "cxx11_abi": abi,
        "host_gcc": host.major, "cxx_std": cxx_std,
    }
    if companions:
        payload["companions"] = dict(companions)
    if variants:
        payload["variants"] = dict(variants)
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
