"""`builder recipe check` and `builder recipe add-version` as library calls: which releases a
recipe does not know and what each would take, and a new release written into a recipe file.

A shipped recipe is package data: add-version writes only a recipe file inside the user's
recipe path (the recipe-path setting), or the file named by `output`.
"""

from __future__ import annotations

import dataclasses
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from builder.errors import BuilderError, RecipeError, SourceError, UsageError
from builder.files import atomic_writer, sha256_of, write_text_atomic
from builder.index_client import project_releases
from builder.planning.recipe import Recipe, parse_recipe
from builder.upkeep.check import ReleaseCheck, check_release
from builder.upkeep.edit import add_version as edit_add_version
from builder.upkeep.releases import newer_releases, newest_known, obtain, upstream_project
from builder.workspace import Workspace


@dataclass(frozen=True)
class RecipeCheck:
    """A recipe against its project's releases on the index."""

    recipe: str
    newest_known: str
    project: str | None
    index_url: str
    releases: tuple[ReleaseCheck, ...] = ()
    skipped: str = ""
    """Why nothing was asked (a source given by hand)."""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "newest_known": self.newest_known, "project": self.project,
                "index_url": self.index_url, "unknown_releases": [r.version for r in self.releases],
                "releases": [r.to_json() for r in self.releases], "skipped": self.skipped or None,
                "error": self.error or None}


def check_recipe(ws: Workspace, name: str, *, version: str | None = None, source: str | None = None,
                 pre: bool = False) -> RecipeCheck:
    """The recipe's unknown releases newer than its newest version (or the one `version` names),
    each checked; `source` (an archive or directory) stands in for the newest one's download."""
    recipe = ws.recipes.load(name)
    index_url, project = ws.settings.source_index, upstream_project(recipe)
    base = RecipeCheck(recipe.name, str(newest_known(recipe)), project, index_url)
    if project is None:
        return dataclasses.replace(base, skipped="its sources are given by hand (--source): no index to ask")
    try:
        releases = newer_releases(recipe, index_url, pre=pre)
    except BuilderError as exc:
        return dataclasses.replace(base, error=exc.message)
    if version is not None:
        releases = {Version(version): releases.get(Version(version), [])}
    newest = max(releases, default=None)
    checks = []
    for release, files in releases.items():
        given = source if release == newest else None
        try:
            found = obtain(ws, recipe, str(release), files, given)
        except SourceError as exc:
            checks.append(ReleaseCheck(str(release), base.newest_known, source_error=exc.message))
            continue
        checks.append(check_release(ws, recipe, str(release), found))
    return dataclasses.replace(base, releases=tuple(checks))


@dataclass(frozen=True)
class AddedVersion:
    """What add-version wrote, and what a person still has to do."""

    recipe: str
    version: str
    path: Path
    check: ReleaseCheck
    default: bool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "version": self.version, "written": str(self.path),
                "default_version": self.default, "check": self.check.to_json(),
                "widened": {r.name: r.widened for r in self.check.widenings},
                "needs_patch": [r.name for r in self.check.failing], "notes": self.notes}


def add_version(ws: Workspace, name: str, version: str, *, source: str | None = None,
                output: str | None = None, make_default: bool = False) -> AddedVersion:
    """Fetch release `version` (or take `source`), check it, and write it into the recipe: its
    source and sha256, the ranges of the patches that apply widened, default_version if asked."""
    recipe = ws.recipes.load(name)
    destination = _destination(ws, recipe, output)
    if version in recipe.versions:
        raise RecipeError(f"{recipe.name} already has version {version}")
    if Version(version) < newest_known(recipe):
        raise UsageError(f"{version} is older than {recipe.name}'s newest version {newest_known(recipe)}",
                         hint="add-version follows upstream forward; write an older version by hand")
    files = _release_files(ws, recipe, version, source)
    found = obtain(ws, recipe, version, files, source)
    if found.path.is_dir() or found.spec.sha256 is None:
        raise UsageError("add-version needs an archive to take the sha256 of, not a directory")
    checked = check_release(ws, recipe, version, found)
    assert recipe.path is not None
    widened = checked.widenings
    text = edit_add_version(recipe.path.read_text(encoding="utf-8"), version, found.spec, carried=checked.carried,
                            patch_ranges={r.index: r.widened for r in widened if r.kind == "patch" and r.widened},
                            variant_ranges={r.name: r.widened for r in widened if r.kind == "variant" and r.widened},
                            make_default=make_default)
    parse_recipe(tomllib.loads(text), recipe.path)  # the result must be a valid recipe
    write_text_atomic(destination, text)
    notes = [f"sha256 {found.spec.sha256}: {found.sha256_from}"]
    _keep_in_cache(ws, found.path, found.spec.file, found.spec.sha256)
    notes += [f"{r.name}: {r.widen_error}" for r in checked.rules if r.widen_error]
    return AddedVersion(recipe.name, version, destination, checked, make_default, notes)


def _release_files(ws: Workspace, recipe: Recipe, version: str, source: str | None) -> list[Any]:
    """The index's files of `version`; a release the index does not list is refused unless the
    source is given by hand (a tag archive the index has no sdist for)."""
    project = upstream_project(recipe)
    if project is None:
        return []
    try:
        files = project_releases(ws.settings.source_index, project).get(Version(version))
    except SourceError:
        if source is None:
            raise
        return []
    if files is None and source is None:
        raise SourceError(f"{ws.settings.source_index} lists no release {version} of {project}",
                          hint="check the version, or pass --source ARCHIVE")
    return files or []


def _destination(ws: Workspace, recipe: Recipe, output: str | None) -> Path:
    """Where the edited recipe goes: `output`, or the recipe file itself when it is in the user's
    recipe path; a shipped recipe (package data) is never written in place."""
    if output is not None:
        return Path(output).expanduser().resolve()
    assert recipe.path is not None
    path = recipe.path.resolve()
    if any(path.is_relative_to(folder.expanduser().resolve()) for folder in ws.settings.recipe_path):
        return path
    where = "builder's shipped recipes" if ws.recipes.origin(recipe.path) == "shipped" else str(path.parent)
    raise UsageError(f"{path} is outside your recipe path ({where}); add-version writes only recipes there",
                     hint="pass --output PATH for a copy with the new version (then put it in your recipe-path)")


def _keep_in_cache(ws: Workspace, archive: Path, file: str | None, sha256: str | None) -> None:
    """A --source archive stored where builds look for the source (the cache's sources folder)."""
    if file is None or sha256 is None:
        return
    stored = ws.cache.dir("sources") / file
    if stored.resolve() != archive.resolve() and not (stored.is_file() and sha256_of(stored) == sha256):
        with atomic_writer(stored) as out, archive.open("rb") as given:
            shutil.copyfileobj(given, out)
