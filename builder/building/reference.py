"""Reference compile costs shipped with a recipe, so that the first build on a fresh machine (no
records of its own in the cache) already starts the heaviest files first, admits each compile by
its own peak and splits the long ones.

By convention they sit beside the recipe: <recipe folder>/costs/<recipe>-<version>.json (shipped
recipes: builder/recipes/costs/, package data). `builder stats RECIPE --export PATH` writes one
from a real build's records, adding to the file's measurements or replacing the one of the same
archs and toolkit major:

    {"recipe": "causal-conv1d", "version": "1.7.0",
     "measurements": [{"archs": ["86"], "cuda": "13.0.88", "host": "g++ 12", "jobs": 2, "cores": 2,
                       "created": 1764000000.0,
                       "files": [{"file": "csrc/causal_conv1d_bwd.cu", "wall_s": 515.2, "cpu_s": 511.0,
                                  "peak_mb": 2270.5, "threads": 1}, ...]}]}

A build takes the measurement of its toolkit major (any other when there is none) with its exact
arch set, else the one with the nearest number of archs, and scales device compiles (.cu files)
to its own number of archs: wall and CPU seconds by the ratio of arch counts, the peak unchanged.
Device code cost is roughly additive per arch (one flash-attn kernel file, nvcc 13.0: one arch
0.28x the CPU of four, /work/shared/DESIGN.md "Measured"); a host compile does not depend on the
archs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from builder.building.costs import BuildCosts, FileCost, costs_key
from builder.errors import RecipeError
from builder.files import write_text_atomic
from builder.planning.plan import Plan
from builder.planning.recipe import Recipe

FOLDER = "costs"
DEVICE_SUFFIXES = (".cu",)
FILE_FIELDS = ("file", "wall_s", "cpu_s", "peak_mb", "threads")


def reference_path(recipe: Recipe, version: str) -> Path | None:
    """Where a recipe's reference costs for a version are by convention (None: a recipe with no file)."""
    if recipe.path is None:
        return None
    return recipe.path.parent / FOLDER / f"{recipe.name}-{version}.json"


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read the reference costs {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("measurements"), list):
        raise RecipeError(f"{path}: not a reference costs file (no measurements list)")
    return data


def major(cuda: str) -> str:
    return cuda.split(".")[0]


def export(costs: BuildCosts, path: Path) -> dict[str, Any]:
    """Add a build's records to a reference costs file (made when missing), replacing the
    measurement of the same archs and toolkit major; returns the measurement written."""
    data: dict[str, Any] = (read(path) if path.is_file()
                            else {"recipe": costs.recipe, "version": costs.version, "measurements": []})
    if (data.get("recipe"), data.get("version")) != (costs.recipe, costs.version):
        raise RecipeError(f"{path} holds costs of {data.get('recipe')} {data.get('version')}, "
                          f"not {costs.recipe} {costs.version}")
    measurement: dict[str, Any] = {"archs": costs.archs, "cuda": costs.cuda, "host": costs.host, "jobs": costs.jobs,
                   "cores": costs.cores, "created": costs.created,
                   "files": [{name: getattr(f, name) for name in FILE_FIELDS}
                             for f in sorted(costs.files, key=lambda f: -f.cpu_s)]}
    kept: list[dict[str, Any]] = [m for m in data["measurements"]
            if (sorted(m["archs"]), major(m["cuda"])) != (sorted(costs.archs), major(costs.cuda))]
    data["measurements"] = [*kept, measurement]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return measurement


def choose(measurements: list[Mapping[str, Any]], archs: list[str], cuda: str) -> Mapping[str, Any] | None:
    """The measurement a build of `archs` with CUDA `cuda` starts from (module docstring)."""
    same_major = [m for m in measurements if major(m["cuda"]) == major(cuda)]
    pool = same_major or measurements
    if not pool:
        return None
    return min(pool, key=lambda m: (sorted(m["archs"]) != sorted(archs), abs(len(m["archs"]) - len(archs))))


def scaled(measurement: Mapping[str, Any], archs: int) -> list[FileCost]:
    """The measurement's files for a build of `archs` archs (device compiles scaled, module docstring)."""
    factor = archs / len(measurement["archs"]) if archs and measurement["archs"] else 1.0
    files = []
    for entry in measurement["files"]:
        f = FileCost(**{name: entry[name] for name in FILE_FIELDS if name in entry}, basis="reference")
        if f.file.endswith(DEVICE_SUFFIXES):
            f = replace(f, wall_s=round(f.wall_s * factor, 3), cpu_s=round(f.cpu_s * factor, 3))
        files.append(f)
    return files


def for_plan(plan: Plan) -> BuildCosts | None:
    """The recipe's reference costs as a build of this plan would have recorded them, or None."""
    path = reference_path(plan.recipe, plan.version)
    if path is None or not path.is_file():
        return None
    archs = [str(a) for a in plan.archs]
    measurement = choose(read(path)["measurements"], archs, plan.toolkit.version)
    if measurement is None:
        return None
    described = (f"{path.name}: sm_{','.join(measurement['archs'])}, CUDA {measurement['cuda']}"
                 + (f", scaled to {len(archs)} arch(s)" if len(archs) != len(measurement["archs"]) else ""))
    return BuildCosts(key=costs_key(plan), recipe=plan.recipe.name, version=plan.version, archs=archs,
                      cuda=plan.toolkit.version, host=str(measurement.get("host", "")),
                      jobs=int(measurement.get("jobs", 0)), cores=int(measurement.get("cores", 0)),
                      memory_budget_gb=0.0, files=scaled(measurement, len(archs)),
                      created=float(measurement.get("created", time.time())), reference=described)
