"""Build matrices: recipes x versions x python x torch x CUDA x archs, from flags or a TOML file,
with the impossible cells dropped and the reason said.

    [matrix]
    recipe  = ["flash-attn"]
    version = ["2.8.3"]          # optional: each recipe's default
    python  = ["3.12"]
    torch   = ["2.7.1", "2.8.0"]
    cuda    = ["12.8", "11.8"]
    arch    = ["80", "90"]
    exclude = [{ cuda = "11.8", arch = "90" }]    # optional, as in GitHub Actions

Cells are judged by the fact tables in builder/compat.py alone, so a matrix can be planned on a
machine with no toolkit: the CUDA version must target the arch, a torch build must exist for
the CUDA major, and the recipe's own requirements must hold.
"""

from __future__ import annotations

import difflib
import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from builder import compat
from builder.archs import parse_arch
from builder.errors import BuilderError, RequirementError, UsageError
from builder.plan import check_recipe_arch, check_requirements
from builder.recipe import load_recipe

AXES = ("recipe", "version", "python", "torch", "cuda", "arch")
GITHUB_MAX_JOBS = 256  # GitHub Actions: "A matrix can generate a maximum of 256 jobs per workflow run"


@dataclass(frozen=True)
class Cell:
    """One build of the matrix."""

    recipe: str
    version: str
    python: str
    torch: str
    cuda: str
    arch: str

    @property
    def label(self) -> str:
        return f"{self.recipe} {self.version} py{self.python} torch{self.torch} cu{self.cuda} sm{self.arch}"

    def to_json(self) -> dict[str, str]:
        return {axis: getattr(self, axis) for axis in AXES}


@dataclass(frozen=True)
class MatrixSpec:
    """The axes of a matrix; an empty `version` axis means each recipe's default version."""

    recipe: tuple[str, ...]
    python: tuple[str, ...]
    torch: tuple[str, ...]
    cuda: tuple[str, ...]
    arch: tuple[str, ...]
    version: tuple[str, ...] = ()
    exclude: tuple[Mapping[str, str], ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> MatrixSpec:
        for key in data:
            if key not in (*AXES, "exclude"):
                close = difflib.get_close_matches(key, (*AXES, "exclude"), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UsageError(f"{where}: unknown key {key!r}{hint}")
        axes = {axis: _axis(data, axis, where, required=axis != "version") for axis in AXES}
        axes["arch"] = tuple(_arch(a, where) for a in axes["arch"])
        for value in (*axes["cuda"], *axes["torch"], *axes["python"], *axes["version"]):
            _version(value, where)
        exclude = data.get("exclude", [])
        if not isinstance(exclude, list) or not all(isinstance(e, dict) and set(e) <= set(AXES) for e in exclude):
            raise UsageError(f"{where}: exclude must be a list of tables over {', '.join(AXES)}")
        rules = tuple({k: _arch(str(v), where) if k == "arch" else str(v) for k, v in e.items()} for e in exclude)
        return cls(exclude=rules, **axes)

    @classmethod
    def from_toml(cls, path: Path) -> MatrixSpec:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise UsageError(f"cannot read the matrix file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: not valid TOML: {exc}") from exc
        if set(data) != {"matrix"} or not isinstance(data["matrix"], dict):
            raise UsageError(f"{path}: expected one [matrix] table, found {', '.join(map(repr, data)) or 'nothing'}")
        return cls.from_mapping(data["matrix"], f"{path}: [matrix]")


def _axis(data: Mapping[str, Any], axis: str, where: str, *, required: bool) -> tuple[str, ...]:
    value = data.get(axis, [])
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise UsageError(f"{where}: {axis} must be a list of strings")
    if required and not value:
        raise UsageError(f"{where}: {axis} is empty; give at least one value")
    return tuple(str(v) for v in value)


def _arch(text: str, where: str) -> str:
    try:
        return parse_arch(text).name
    except BuilderError as exc:
        raise UsageError(f"{where}: {exc.message}") from exc


def _version(text: str, where: str) -> None:
    try:
        Version(text)
    except InvalidVersion as exc:
        raise UsageError(f"{where}: {text!r} is not a version") from exc


def expand(spec: MatrixSpec) -> list[Cell]:
    """Every combination, in the axes' order, minus the excluded ones."""
    cells = []
    for recipe_name in spec.recipe:
        recipe = load_recipe(recipe_name)
        versions = spec.version or (recipe.default_version,)
        for version, python, torch, cuda, arch in itertools.product(versions, spec.python, spec.torch,
                                                                     spec.cuda, spec.arch):
            cell = Cell(recipe_name, version, python, torch, cuda, arch)
            if not any(all(cell.to_json()[k] == v for k, v in rule.items()) for rule in spec.exclude):
                cells.append(cell)
    return cells


def impossible(cell: Cell) -> str | None:
    """Why the cell cannot be built, from compat's tables and the recipe; None when it can."""
    cuda = tuple(int(p) for p in cell.cuda.split(".")[:2])
    archs = compat.known_archs((cuda[0], cuda[1]))
    if archs is None:
        return f"CUDA {cell.cuda} is not in builder's arch table"
    if cell.arch not in archs:
        return f"CUDA {cell.cuda} cannot target sm_{cell.arch} (it targets sm_{archs[0]} to sm_{archs[-1]})"
    if not torch_build_exists(cell.torch, cell.cuda):
        pypi = compat.pypi_torch_cuda(cell.torch)
        return f"no torch {cell.torch} build for CUDA {cuda[0]} (PyPI's is CUDA {pypi or 'unknown'})"
    recipe = load_recipe(cell.recipe)
    try:
        recipe.source_for(cell.version)
        check_recipe_arch(recipe, parse_arch(cell.arch))
        check_requirements(recipe, {"version": cell.version, "torch": cell.torch, "cuda": cell.cuda,
                                    "python": cell.python})
    except (RequirementError, BuilderError) as exc:
        return exc.message
    return None


def torch_build_exists(torch: str, cuda: str) -> bool:
    """PyPI's torch build has the same CUDA major, or PyTorch's index has one for that CUDA. A
    release the table does not know yet is given the benefit of the doubt, as `--torch` does
    (the build's venv probe then checks its CUDA)."""
    pypi = compat.pypi_torch_cuda(torch)
    if pypi is None or pypi.split(".")[0] == cuda.split(".")[0]:
        return True
    builds = compat.PYTORCH_INDEX_BUILDS.get(cuda)
    release = Version(torch).release[:2]
    return builds is not None and builds[0] <= release <= builds[1]


def filter_cells(cells: Iterable[Cell]) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """(cells to build, dropped cells with their reason)."""
    kept: list[Cell] = []
    dropped: list[tuple[Cell, str]] = []
    for cell in cells:
        reason = impossible(cell)
        if reason is None:
            kept.append(cell)
        else:
            dropped.append((cell, reason))
    return kept, dropped


def github_matrices(cells: Sequence[Cell], max_jobs: int = GITHUB_MAX_JOBS) -> list[dict[str, Any]]:
    """strategy.matrix values (`include:` lists), each under GitHub's jobs-per-matrix limit."""
    return [{"include": [c.to_json() for c in cells[start:start + max_jobs]]}
            for start in range(0, len(cells), max_jobs)]
