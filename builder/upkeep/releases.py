"""A recipe's package upstream: the releases on the index newer than the recipe knows, and the
source of one of them, with the sha256 that will pin it.

The releases are read from the configured index (the index-url setting) under the project the
recipe's sources name: a `pypi` source's project, else the recipe's own name (bitsandbytes and
autoawq-kernels are PyPI projects whose sources builder takes from GitHub tag archives). A `url`
source's new URL is the newest known one with the version replaced, e.g.
.../archive/refs/tags/0.49.0.tar.gz -> .../archive/refs/tags/0.50.2.tar.gz.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from builder.building.source import download
from builder.errors import SourceError
from builder.files import sha256_of
from builder.index_client import IndexedFile, project_page, project_releases, sdist_of
from builder.planning.recipe import Recipe
from builder.planning.source_spec import SourceSpec
from builder.workspace import Workspace


@dataclass(frozen=True)
class NewSource:
    """A release's source on disk and the spec a recipe will record for it."""

    spec: SourceSpec
    path: Path
    """The archive (or, for a check, a --source directory: then spec.sha256 is None)."""
    sha256_from: str
    """Where the sha256 comes from, said to the user."""


def newest_known(recipe: Recipe) -> Version:
    return max(Version(v) for v in recipe.versions)


def newest_spec(recipe: Recipe) -> SourceSpec:
    """The source of the recipe's newest version: the pattern a new one follows."""
    return recipe.versions[str(max(recipe.versions, key=Version))]


def upstream_project(recipe: Recipe) -> str | None:
    """The index project whose releases the recipe follows; None for a source given by hand."""
    spec = newest_spec(recipe)
    if spec.pypi is not None:
        return spec.pypi
    return recipe.name if spec.url is not None else None


def newer_releases(recipe: Recipe, index_url: str, *, pre: bool = False) -> dict[Version, list[IndexedFile]]:
    """The releases on the index newer than the recipe's newest version (pre-releases with `pre`)."""
    project = upstream_project(recipe)
    if project is None:
        return {}
    newest = newest_known(recipe)
    return {version: files for version, files in project_releases(index_url, project).items()
            if version > newest and (pre or not version.is_prerelease)}


def planned_spec(recipe: Recipe, version: str, files: list[IndexedFile] | None, index_url: str) -> SourceSpec:
    """Where release `version` comes from, its sha256 not yet known unless the index lists it:
    the sdist the index lists, or the newest URL with the version replaced."""
    base = newest_spec(recipe)
    if base.pypi is not None:
        sdist = sdist_of(files or [])
        if sdist is None:
            raise SourceError(f"{project_page(index_url, base.pypi)} has no sdist of {version}",
                              hint="pass --source ARCHIVE")
        return SourceSpec(pypi=base.pypi, file=sdist.filename, sha256=sdist.sha256)
    if base.url is None:
        raise SourceError(f"{recipe.name}'s sources are given by hand; pass --source")
    old = str(newest_known(recipe))
    if old not in base.url:
        raise SourceError(f"cannot tell the URL of {version} from {base.url} (it does not name {old})",
                          hint="pass --source ARCHIVE")
    file = base.file.replace(old, version) if base.file else None
    return SourceSpec(url=base.url.replace(old, version), file=file)


def obtain(ws: Workspace, recipe: Recipe, version: str, files: list[IndexedFile] | None,
           given: str | None = None) -> NewSource:
    """Release `version`'s source: `given` (--source), else downloaded into the cache's sources,
    its sha256 checked against the index's when the index lists one."""
    base = newest_spec(recipe)
    try:
        spec = planned_spec(recipe, version, files, ws.settings.source_index)
    except SourceError:
        if given is None or base.pypi is None:
            raise
        spec = SourceSpec(pypi=base.pypi, file=Path(given).name)  # an index without the sdist
    if given is not None:
        return _given(spec, Path(given).expanduser().resolve())
    name = spec.file or (spec.url or "").rsplit("/", 1)[-1]
    target = ws.cache.dir("sources") / name
    if spec.pypi is not None:
        url = next(f.url for f in files or [] if f.filename == spec.file)
        sha256 = download(url, target, spec.sha256)
        said = "the index's, checked against the download" if spec.sha256 else "the download's (the index lists none)"
    else:
        assert spec.url is not None
        sha256 = download(ws.settings.mirrored(spec.url), target, None)
        said = f"that of the file downloaded from {spec.url}"
    return NewSource(dataclasses.replace(spec, sha256=sha256, file=spec.file or name), target, said)


def _given(spec: SourceSpec, path: Path) -> NewSource:
    if not path.exists():
        raise SourceError(f"--source {path}: no such file or directory")
    if path.is_dir():
        return NewSource(dataclasses.replace(spec, sha256=None), path, "none (a directory was given)")
    sha256 = sha256_of(path)
    if spec.pypi is not None and spec.sha256 is not None and spec.sha256.lower() != sha256:
        raise SourceError(f"--source {path} has sha256 {sha256}, but the index lists {spec.sha256} for {spec.file}")
    return NewSource(dataclasses.replace(spec, sha256=sha256, file=spec.file or path.name), path,
                     f"that of the file given (--source {path})")
