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

Cells are judged by facts, not by this machine's toolkits, so a matrix can be planned on a
machine with none: the CUDA version must target the arch (compat's table), a torch build must
exist for the CUDA major (the planner's own decision, buildpython.choose_torch_build, with the
CUDA of torch releases compat does not list read from the index), and the recipe's requirements
must hold (the planner's checks, reused). Without a version axis each cell takes the version the
planner would: the newest whose requirements hold for it (plan.fitting_version).
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from builder.errors import RecipeError, RequirementError, ToolchainError, UsageError
from builder.planning import compat
from builder.planning.archs import Arch, parse_arch
from builder.planning.buildpython import CudaOfTorch, choose_torch_build, table_cuda
from builder.planning.plan import fitting_version, requirement_problem
from builder.planning.recipe import Recipe, RecipeBook
from builder.tables import check_keys

AXES = ("recipe", "version", "python", "torch", "cuda", "arch")
TABLE_HEADER = (*AXES, "status")
GITHUB_MAX_JOBS = 256  # GitHub Actions: "A matrix can generate a maximum of 256 jobs per workflow run"


@dataclass(frozen=True)
class Cell:
    """One build of the matrix, each value as `builder build` takes it."""

    recipe: str
    """A recipe name (or the path of a recipe file)."""
    version: str
    python: str
    """Python X.Y."""
    torch: str
    cuda: str
    """CUDA X.Y."""
    arch: str
    """Normal form ("86", "90a"); "" for a recipe without GPU code, which builds once for all archs."""

    @property
    def label(self) -> str:
        """One line naming the cell: "flash-attn 2.8.3 py3.12 torch2.7.1 cu12.8 sm86"."""
        text = f"{self.recipe} {self.version} py{self.python} torch{self.torch} cu{self.cuda}"
        return f"{text} sm{self.arch}" if self.arch else text

    def to_json(self) -> dict[str, str]:
        """The cell keyed by axis, in AXES order."""
        return {axis: getattr(self, axis) for axis in AXES}


@dataclass(frozen=True)
class MatrixSpec:
    """The axes of a matrix, each value validated and normalised; an empty `version` axis means
    each recipe's default version."""

    recipe: tuple[str, ...]
    python: tuple[str, ...]
    torch: tuple[str, ...]
    cuda: tuple[str, ...]
    arch: tuple[str, ...]
    version: tuple[str, ...] = ()
    exclude: tuple[Mapping[str, str], ...] = ()
    """GitHub-style rules: a cell matching every key of one rule is left out."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str, recipes: RecipeBook) -> MatrixSpec:
        """The spec of a [matrix] table (or of the CLI's flags as one); errors name `where` and the key."""
        _check_keys(data, (*AXES, "exclude"), where)
        axes = {axis: _axis(data.get(axis), axis, where) for axis in AXES}
        for name in axes["recipe"]:
            _check_recipe(name, where, recipes)
        return cls(exclude=_exclude(data.get("exclude", []), where), **axes)

    @classmethod
    def from_toml(cls, path: Path, recipes: RecipeBook) -> MatrixSpec:
        """The spec of a TOML file holding one [matrix] table."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read the matrix file {path}: {exc.strerror or exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not valid TOML: {exc}") from exc
        _check_keys(data, ("matrix",), str(path))
        if not isinstance(data.get("matrix"), dict):
            raise UsageError(f"{path}: expected one [matrix] table",
                             hint='start the file with [matrix], then recipe = ["..."], python = [...], ...')
        return cls.from_mapping(data["matrix"], f"{path}: [matrix]", recipes)


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    check_keys(table, allowed, where, UsageError)


def _axis(value: Any, axis: str, where: str) -> tuple[str, ...]:
    """An axis's values, normalised, duplicates dropped; only `version` may be absent or empty."""
    if value is None and axis != "version":
        raise UsageError(f"{where}: {axis} is missing", hint=f'e.g. {axis} = ["..."]; see the README')
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not values and axis != "version":
        raise UsageError(f"{where}: {axis} is empty; give at least one value")
    return tuple(dict.fromkeys(_value(v, axis, where) for v in values))


def _value(value: Any, axis: str, where: str) -> str:
    """One value of an axis in normal form; UsageError naming the key when it is malformed."""
    if isinstance(value, float):
        raise UsageError(f"{where}: {axis} value {value} must be a quoted string",
                         hint='a TOML number loses digits: write "3.10", not 3.10')
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UsageError(f"{where}: {axis} must be a list of strings, not {type(value).__name__} {value!r}")
    text = str(value).strip()
    if axis == "arch":
        try:
            return parse_arch(text).name
        except UsageError as exc:
            raise UsageError(f"{where}: arch: {exc.message}", hint=exc.hint) from exc
    if axis in ("version", "torch", "python", "cuda"):
        _check_version(text, axis, where)
    return text


def _check_version(text: str, axis: str, where: str) -> None:
    try:
        release = Version(text).release
    except InvalidVersion as exc:
        raise UsageError(f"{where}: {axis}: {text!r} is not a version") from exc
    if axis in ("python", "cuda") and len(release) < 2:
        raise UsageError(f"{where}: {axis}: {text!r} is not a version X.Y", hint=f"e.g. {axis} = [\"{text}.0\"]")


def _check_recipe(name: str, where: str, recipes: RecipeBook) -> None:
    try:
        recipes.load(name)
    except RecipeError as exc:
        raise RecipeError(f"{where}: recipe: {exc.message}", hint=exc.hint) from exc


def _exclude(value: Any, where: str) -> tuple[Mapping[str, str], ...]:
    if not isinstance(value, list) or not all(isinstance(rule, dict) for rule in value):
        raise UsageError(f"{where}: exclude must be a list of tables",
                         hint='e.g. exclude = [{ cuda = "11.8", arch = "90" }]')
    rules = []
    for index, rule in enumerate(value):
        at = f"{where}: exclude[{index}]"
        if not rule:
            raise UsageError(f"{at} is empty; it would exclude every cell")
        _check_keys(rule, AXES, at)
        rules.append({axis: _value(v, axis, at) for axis, v in rule.items()})
    return tuple(rules)


def expand(spec: MatrixSpec, recipes: RecipeBook) -> list[Cell]:
    """Every combination in the axes' order (arch varies fastest), minus the excluded ones. A
    recipe without GPU code gets one cell (arch "") per combination of the other axes. Without a
    version axis a cell's version is the one its target fits (cell_version)."""
    cells = []
    for name in spec.recipe:
        recipe = recipes.load(name)
        archs = spec.arch if recipe.build.kernels else ("",)
        for version, python, torch, cuda, arch in itertools.product(
                spec.version or ("",), spec.python, spec.torch, spec.cuda, archs):
            cell = Cell(name, version or cell_version(recipe, python, torch, cuda, arch), python, torch, cuda, arch)
            if not any(_matches(cell, rule) for rule in spec.exclude):
                cells.append(cell)
    return cells


def cell_version(recipe: Recipe, python: str, torch: str, cuda: str, arch: str) -> str:
    """The version `builder plan` takes for this target when none is asked (the default one when
    none fits: the cell then says why)."""
    try:
        return fitting_version(recipe, {"python": python, "torch": torch, "cuda": cuda},
                               (parse_arch(arch),) if arch else ())[0]
    except RequirementError:
        return recipe.default_version


def _matches(cell: Cell, rule: Mapping[str, str]) -> bool:
    return all(getattr(cell, axis) == value for axis, value in rule.items())


def impossible(cell: Cell, recipes: RecipeBook, default_cuda: CudaOfTorch = table_cuda) -> str | None:
    """Why the cell cannot be built, in one line, or None when it can: the toolkit, then torch,
    then the recipe. `default_cuda` answers which CUDA the default index's build of a torch
    release has (Workspace.torch_cuda: the table, else the index; default: the table alone)."""
    return (_toolkit_reason(cell) or _torch_reason(cell, default_cuda)
            or _recipe_reason(recipes.load(cell.recipe), cell))


def _toolkit_reason(cell: Cell) -> str | None:
    release = Version(cell.cuda).release
    archs = compat.known_archs((release[0], release[1] if len(release) > 1 else 0))
    if archs is None:
        return f"CUDA {cell.cuda} is not in builder's table of archs per CUDA (builder/compat.py)"
    if not cell.arch or cell.arch in archs:
        return None
    return f"CUDA {cell.cuda} cannot target sm_{cell.arch} ({_outside(parse_arch(cell.arch), archs)})"


def _outside(arch: Arch, archs: Sequence[str]) -> str:
    """Where an arch falls outside a toolkit's list: past its end, before its start, or in a gap."""
    known = sorted(parse_arch(a) for a in archs)
    if arch > known[-1]:
        return f"its archs end at {known[-1].sm}"
    if arch < known[0]:
        return f"its archs start at {known[0].sm}"
    return f"not among its archs, {known[0].sm} to {known[-1].sm}"


def _torch_reason(cell: Cell, default_cuda: CudaOfTorch) -> str | None:
    """The refusal `builder plan --torch --cuda` gives, from the same decision
    (buildpython.choose_torch_build): no build of that torch for the CUDA major, or its CUDA unknown."""
    try:
        choose_torch_build(cell.torch, cell.cuda, None, default_cuda)
    except ToolchainError as exc:
        return exc.message
    return None


def _recipe_reason(recipe: Recipe, cell: Cell) -> str | None:
    """The planner's refusals for this recipe: unknown version, a source that cannot be
    downloaded, an arch without kernels, the recipe's cuda/torch requirements."""
    try:
        version, source = recipe.source_for(cell.version)
        if source.local is not None:
            return f"{recipe.name} {version} has no source to download (build it by hand with --source)"
        facts = {"version": version, "torch": cell.torch, "cuda": cell.cuda, "python": cell.python}
        return requirement_problem(recipe, facts, (parse_arch(cell.arch),) if cell.arch else ())
    except RecipeError as exc:
        return exc.message


def filter_cells(cells: Iterable[Cell], recipes: RecipeBook,
                 default_cuda: CudaOfTorch = table_cuda) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    """(cells to build, dropped cells with their reason), both in the given order."""
    kept: list[Cell] = []
    dropped: list[tuple[Cell, str]] = []
    for cell in cells:
        reason = impossible(cell, recipes, default_cuda)
        if reason is None:
            kept.append(cell)
        else:
            dropped.append((cell, reason))
    return kept, dropped


def cells_table_rows(kept: Iterable[Cell], dropped: Iterable[tuple[Cell, str]]) -> list[list[str]]:
    """Rows under TABLE_HEADER: the axes' values and "build" or "skip: <reason>"."""
    return [_row(cell, "build") for cell in kept] + [_row(cell, f"skip: {reason}") for cell, reason in dropped]


def _row(cell: Cell, status: str) -> list[str]:
    values = cell.to_json()
    values["arch"] = values["arch"] or "-"
    return [*values.values(), status]


def github_matrices(cells: Sequence[Cell], max_jobs: int = GITHUB_MAX_JOBS) -> list[dict[str, Any]]:
    """strategy.matrix values, one `include:` list of cells (each with its label) per chunk of
    at most max_jobs cells, in order."""
    if not 1 <= max_jobs <= GITHUB_MAX_JOBS:
        raise UsageError(f"max_jobs must be 1 to {GITHUB_MAX_JOBS} (GitHub's limit per matrix), not {max_jobs}")
    return [{"include": [{**cell.to_json(), "label": cell.label} for cell in cells[start:start + max_jobs]]}
            for start in range(0, len(cells), max_jobs)]

