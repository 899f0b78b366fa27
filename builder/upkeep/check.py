"""Whether a recipe's rules carry over to a release it does not know: each patch's `when` range
and each variant's `versions` (evaluated by Condition.holds), a dry run of the patches against the
release's source (in recipe order on a scratch tree, the variants' patches after them, as a build
applies them), and the build requirements its setup.py / pyproject.toml list, read not run,
against those of the recipe's newest version.

The rules tried are those of the newest known version's era: the patches (and variants) whose
range admits that version or the new one. A rule that admits the newest version and whose patch
applies cleanly gets its range widened by `builder recipe add-version`; one whose patch fails
needs a person to write the patch for the new release.
"""

from __future__ import annotations

import dataclasses
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from packaging.version import Version

from builder.building.patching import DryRun, try_patches
from builder.building.pins import listed_requirements, read_text
from builder.building.source import extract, read_top_file
from builder.errors import BuilderError, RecipeError
from builder.planning.recipe import Condition, Patch, Recipe
from builder.upkeep.ranges import widen
from builder.upkeep.releases import NewSource, newest_known
from builder.workspace import Workspace

BUILD_FILES = ("setup.py", "pyproject.toml")


@dataclass(frozen=True)
class RuleCheck:
    """A patch of the recipe, or a variant (with the patches it brings), against the new release."""

    kind: str
    """"patch" or "variant"."""
    name: str
    """The patch file, or the variant's name."""
    range: str
    """The version range as the recipe writes it ("" for a variant of every version)."""
    other_conditions: str = ""
    """A patch's conditions besides the version (cuda, torch, python), which a target decides."""
    holds_before: bool = False
    """Whether the range admits the recipe's newest version."""
    holds: bool = False
    """Whether the range admits the new release."""
    dry_runs: tuple[DryRun, ...] = ()
    """The patch's dry run (a variant: of each of its patches); empty when none ran."""
    widened: str | None = None
    """The range add-version writes (None: left as it is)."""
    widen_error: str = ""
    index: int = -1
    """A patch's place among the recipe's [[patches]] tables."""

    @property
    def applies(self) -> bool | None:
        return all(d.applies for d in self.dry_runs) if self.dry_runs else None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "range": self.range, "other_conditions": self.other_conditions,
                "holds_for_newest_known": self.holds_before, "holds": self.holds, "applies": self.applies,
                "dry_runs": [{"file": d.file, "applies": d.applies, "failure": d.failure,
                              "hunks": [{"file": h.file, "hunk": h.hunk, "line": h.line, "text": h.text}
                                        for h in d.hunks]} for d in self.dry_runs],
                "widened": self.widened, "widen_error": self.widen_error}


@dataclass(frozen=True)
class RequirementsDiff:
    """The build files' requirement lists of the new release against the newest known version's."""

    compared_with: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    error: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def describe(self) -> str:
        if self.error:
            return f"not compared: {self.error}"
        if not self.changed:
            return f"unchanged since {self.compared_with}"
        return " ".join([*(f"+{r}" for r in self.added), *(f"-{r}" for r in self.removed)])


@dataclass(frozen=True)
class ReleaseCheck:
    """One release the recipe does not know, and what adding it would take."""

    version: str
    newest_known: str
    source: NewSource | None = None
    source_error: str = ""
    rules: tuple[RuleCheck, ...] = ()
    requirements: RequirementsDiff | None = None
    carried: dict[str, str] = field(default_factory=dict)
    """The newest version's own keys ([versions."X"] requires, backend) the new one takes over."""

    @property
    def failing(self) -> list[RuleCheck]:
        """Rules whose patches do not apply to the release (a person writes the new patch)."""
        return [r for r in self.rules if r.applies is False]

    @property
    def widenings(self) -> list[RuleCheck]:
        return [r for r in self.rules if r.widened is not None]

    def verdict(self) -> str:
        if self.source is None:
            return f"source unavailable: {self.source_error}"
        if self.failing:
            return "needs a new patch: " + "; ".join(
                f"{r.name} ({', '.join(d.failure for d in r.dry_runs if not d.applies)})" for r in self.failing)
        widened = len(self.widenings)
        return "ready" + (f": add-version widens {widened} range{'s' if widened != 1 else ''}" if widened else "")

    def to_json(self) -> dict[str, Any]:
        source = self.source
        return {"version": self.version, "newest_known": self.newest_known, "verdict": self.verdict(),
                "source": None if source is None else {
                    "pypi": source.spec.pypi, "url": source.spec.url, "file": source.spec.file,
                    "sha256": source.spec.sha256, "sha256_from": source.sha256_from, "path": str(source.path)},
                "source_error": self.source_error or None, "rules": [r.to_json() for r in self.rules],
                "requirements": None if self.requirements is None else {
                    "compared_with": self.requirements.compared_with, "added": list(self.requirements.added),
                    "removed": list(self.requirements.removed), "error": self.requirements.error or None},
                "carried": self.carried}


def raw_ranges(recipe: Recipe) -> tuple[list[str], dict[str, str]]:
    """The version ranges as the recipe file writes them: each patch's, each variant's."""
    if recipe.path is None:
        raise RecipeError(f"{recipe.name} has no recipe file")
    data = tomllib.loads(recipe.path.read_text(encoding="utf-8"))
    patches = [str(table.get("when", {}).get("version", "")) for table in data.get("patches", [])]
    variants = {name: str(table.get("versions", "")) for name, table in data.get("variants", {}).items()}
    return patches, variants


def carried_keys(recipe: Recipe) -> dict[str, str]:
    """The newest version's [versions."X"] keys besides its source, as TOML text."""
    assert recipe.path is not None
    document = tomlkit.parse(recipe.path.read_text(encoding="utf-8"))
    table = document["versions"][str(max(recipe.versions, key=Version))]
    return {str(key): value.as_string() for key, value in table.items() if key != "source"}


def check_release(ws: Workspace, recipe: Recipe, version: str, source: NewSource) -> ReleaseCheck:
    """Every rule of the newest known version's era tried on `source`, and the requirement lists."""
    new, before = Version(version), newest_known(recipe)
    known = [Version(v) for v in recipe.versions]
    patch_ranges, variant_ranges = raw_ranges(recipe)
    era = [(index, patch) for index, patch in enumerate(recipe.patches)
           if _admits(patch.when, before) or _admits(patch.when, new)]
    variants = [v for v in recipe.variants.values()
                if v.versions.contains(before, prereleases=True) or v.versions.contains(new, prereleases=True)]
    variant_files = list(dict.fromkeys(f for v in variants for f in v.patches))
    with tempfile.TemporaryDirectory(dir=ws.cache.dir("staging")) as tmp:
        tree = extract(source.path, Path(tmp) / "new")
        requirements = requirements_diff(ws, recipe, tree)
        dry = try_patches([p for _, p in era] + [Patch(file=f, path=recipe.variant_patch_paths[f])
                                                 for f in variant_files], tree)
    of_variants = dict(zip(variant_files, dry[len(era):], strict=True))
    rules = [dataclasses.replace(_rule("patch", patch.file, patch_ranges[index], patch.when, before, new,
                                       (result,), known), index=index)
             for (index, patch), result in zip(era, dry, strict=False)]
    rules += [_rule("variant", v.name, variant_ranges.get(v.name, ""), Condition(version=v.versions), before,
                    new, tuple(of_variants[f] for f in v.patches), known) for v in variants]
    return ReleaseCheck(version, str(before), source, rules=tuple(rules), requirements=requirements,
                        carried=carried_keys(recipe))


def _admits(when: Condition, version: Version) -> bool:
    return when.only("version").holds({"version": str(version)})


def _rule(kind: str, name: str, text: str, when: Condition, before: Version, new: Version,
          dry_runs: tuple[DryRun, ...], known: list[Version]) -> RuleCheck:
    holds_before, holds = _admits(when, before), _admits(when, new)
    widened, error = None, ""
    if holds_before and not holds and text and all(d.applies for d in dry_runs):
        try:
            widened = widen(text, new, known)
        except RecipeError as exc:
            error = exc.message
    others = when.specs.keys() - {"version"}
    return RuleCheck(kind, name, text, ", ".join(f"{k} {when.specs[k]}" for k in sorted(others)),
                     holds_before, holds, dry_runs, widened, error)


def requirements_diff(ws: Workspace, recipe: Recipe, tree: Path) -> RequirementsDiff:
    """The build-file requirements of the new release's (unpatched) tree against those of the
    newest known version's source (read from its archive, not unpacked)."""
    before = str(max(recipe.versions, key=Version))
    try:
        old_source = ws.fetch(recipe.versions[before])
        old = _requirements(lambda name: read_top_file(old_source, name))
        new = _requirements(lambda name: read_text(tree / name))
    except BuilderError as exc:
        return RequirementsDiff(before, error=exc.message)
    return RequirementsDiff(before, tuple(r for r in new if r not in old), tuple(r for r in old if r not in new))


def _requirements(read: Callable[[str], str | None]) -> list[str]:
    found: list[str] = []
    for name in BUILD_FILES:
        text = read(name)
        if text is not None:
            found += [f"{r} ({name})" for r in listed_requirements(name, text) if f"{r} ({name})" not in found]
    return found
