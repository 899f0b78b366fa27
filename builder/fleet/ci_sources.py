"""What a generated workflow needs from outside itself, said so that it holds in the team's repository.

A runner has the repository (actions/checkout) and a package index, nothing of the machine that
wrote the workflow. So builder is installed from a pip requirement, always with the `s3` extra:
`.[s3]` in builder's own repository, else where the running builder came from (PEP 610's
direct_url.json: a git URL pinned to its commit, an archive URL), else its exact version from the
index; `--builder-source` names any other (workflow_requirement). A recipe given by path is written relative to the
repository's root (`git rev-parse --show-toplevel`), and the recipe-path folders inside the
repository go on the job's BUILDER_RECIPE_PATH, relative too; what lies outside it is refused.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from builder import __version__
from builder.errors import UsageError
from builder.fleet.matrix import Cell
from builder.planning.recipe import RecipeBook
from builder.process import capture

PROJECT = "builder"
EXTRA = "s3"  # the jobs upload to the shared cache, which may be S3
DEFAULT_REQUIREMENT = f"{PROJECT}[{EXTRA}]=={__version__}"
"""builder's own version from the runners' index: the last resort of default_builder_source."""
SOURCE_HINT = ("pass --builder-source: a pinned git URL (git+https://github.com/ORG/builder@<commit>), a wheel "
               "URL, builder==X from the runners' index, or `.` in builder's own repository")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def workflow_requirement(source: str | None, repository: Path | None, cwd: Path) -> str:
    """builder's pip requirement for a workflow of `repository` (None: none around; `cwd` then
    stands for it): `source` (--builder-source) or default_builder_source, with the s3 extra. `.`
    is refused outside builder's own repository: it would install the team's repository."""
    own = is_builder_repository(repository or cwd)
    if source is not None and source.strip() == "." and not own:
        where = repository or cwd
        raise UsageError(f"--builder-source . installs the repository itself, and {where} is not a checkout "
                         "of builder", hint=SOURCE_HINT)
    return builder_requirement(source if source is not None else "." if own else default_builder_source())


def builder_requirement(source: str) -> str:
    """The pip requirement that installs `source` with the s3 extra: `.` -> `.[s3]`, a URL ->
    `builder[s3] @ URL`, a requirement of builder (`builder==X`, `builder @ URL`) -> the same
    with s3 among its extras."""
    source = source.strip()
    if source == ".":
        return f".[{EXTRA}]"
    if _URL.match(source):
        return f"{PROJECT}[{EXTRA}] @ {source}"
    try:
        requirement = Requirement(source)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not PEP 508"
        raise UsageError(f"--builder-source {source!r} is neither `.`, a URL nor a pip requirement ({reason})",
                         hint=SOURCE_HINT) from exc
    if canonicalize_name(requirement.name) != PROJECT:
        raise UsageError(f"--builder-source {source!r} is a requirement of {requirement.name}, not of builder",
                         hint=SOURCE_HINT)
    requirement.extras = {*requirement.extras, EXTRA}
    return str(requirement)


def default_builder_source() -> str:
    """The source of the running builder (source_from_direct_url), else its version, for the index."""
    try:
        distribution = importlib.metadata.distribution(PROJECT)
    except importlib.metadata.PackageNotFoundError:
        return f"{PROJECT}=={__version__}"
    direct_url = distribution.read_text("direct_url.json")
    if not direct_url:
        return f"{PROJECT}=={distribution.version}"
    return source_from_direct_url(json.loads(direct_url), distribution.version)


def source_from_direct_url(record: Mapping[str, Any], version: str) -> str:
    """What a runner installs to get the builder a PEP 610 record describes: a git URL pinned to the
    commit, an archive URL (checked by its sha256); a path of this machine is refused, since a runner
    cannot reach it."""
    url = str(record.get("url", ""))
    if url.startswith("file:"):
        raise UsageError(f"builder {version} here is installed from {url}, a path of this machine that the "
                         "runners cannot install from", hint=SOURCE_HINT)
    vcs, archive = record.get("vcs_info"), record.get("archive_info")
    fragment = [f"subdirectory={record['subdirectory']}"] if record.get("subdirectory") else []
    if isinstance(vcs, dict) and vcs.get("commit_id"):
        url = f"{vcs.get('vcs', 'git')}+{url}@{vcs['commit_id']}"
    elif isinstance(archive, dict) and (archive.get("hashes") or {}).get("sha256"):
        fragment.insert(0, f"sha256={archive['hashes']['sha256']}")
    elif not isinstance(archive, dict):
        return f"{PROJECT}=={version}"
    return f"{PROJECT} @ {url}" + (f"#{'&'.join(fragment)}" if fragment else "")


def is_builder_repository(root: Path) -> bool:
    """Whether `root` is a checkout of builder itself (its pyproject.toml's project is builder)."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return isinstance(project, dict) and canonicalize_name(str(project.get("name", ""))) == PROJECT


def repository_root(*starts: Path) -> Path | None:
    """The root of the git work tree around the first of `starts` that lies in one (a start that does
    not exist yet counts as its nearest existing folder); None when none does."""
    for start in starts:
        folder = start.absolute()
        while not folder.is_dir() and folder != folder.parent:
            folder = folder.parent
        found = capture(["git", "-C", folder, "rev-parse", "--show-toplevel"])
        if found.returncode == 0 and found.stdout.strip():
            return Path(found.stdout.strip()).resolve()
    return None


def cells_in_repository(cells: Sequence[Cell], recipes: RecipeBook,
                        repository: Path | None) -> tuple[list[Cell], tuple[str, ...]]:
    """The cells with each recipe path made relative to `repository`, and the recipe-path folders
    inside it (relative, in their order) for the job's BUILDER_RECIPE_PATH. A recipe file, or a
    recipe found in a recipe-path folder, outside the repository is refused: a runner has only it."""
    folders = tuple(_relative(folder, repository) for folder in recipes.folders
                    if repository is not None and _inside(folder, repository))
    written: dict[str, str] = {}
    for recipe in dict.fromkeys(cell.recipe for cell in cells):
        path = recipes.locate(recipe)
        if Path(recipe).suffix == ".toml":
            root = _inside_or_refuse(repository, path, f"recipe {recipe}",
                                     f"copy it into the repository (e.g. recipes/{path.name}) and pass that path")
            written[recipe] = _relative(path, root)
        elif recipes.origin(path) != "shipped":
            _inside_or_refuse(repository, path.parent, f"recipe {recipe} (from the recipe-path folder {path.parent})",
                              "move that folder into the repository and put it on your recipe path from there")
    return [Cell(written.get(c.recipe, c.recipe), c.version, c.python, c.torch, c.cuda, c.arch) for c in cells], folders


def _inside_or_refuse(repository: Path | None, path: Path, what: str, hint: str) -> Path:
    """The repository, when `path` lies in it; else UsageError."""
    if repository is None:
        raise UsageError(f"{what} is a file of this machine, and neither the workflow's folder nor the current "
                         "directory is in a git repository to write it relative to",
                         hint="run `builder ci github` in the repository the workflow is for, or --output into it")
    if not _inside(path, repository):
        raise UsageError(f"{what} is outside the repository {repository}; a runner has only the repository's files",
                         hint=hint)
    return repository


def _inside(path: Path, repository: Path) -> bool:
    return path.expanduser().resolve().is_relative_to(repository)


def _relative(path: Path, repository: Path) -> str:
    return path.expanduser().resolve().relative_to(repository).as_posix()
