"""Where a recipe's source comes from (a PyPI file, a URL, a local path), and the hash that names
its content in the cache key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import SourceError
from builder.files import sha256_of, tree_sha256
from builder.schema import pattern


@dataclass(frozen=True)
class SourceSpec:
    """Where a recipe's source comes from: exactly one of pypi/url/path/local is set."""

    pypi: str | None = None
    """A project on the package index (the index-url setting), e.g. "flash-attn"; with `file`."""
    file: str | None = None
    """The file's name on the index (with a url: the name it is stored under)."""
    url: str | None = None
    """A direct URL to an archive."""
    path: str | None = None
    """A local archive or directory (relative to the recipe)."""
    sha256: str | None = field(default=None, metadata=pattern("[0-9a-fA-F]{64}", "a sha256 (64 hex digits)"))
    """The archive's sha256: required for pypi and url; for a local archive checked when given."""
    local: str | None = None
    """No download: what the user must pass with --source (e.g. "a checkout of chatglm.cpp")."""


def with_override(spec: SourceSpec, override: str | None, what: str) -> SourceSpec:
    """The recipe's source, or --source in its place (the sha256 kept for an archive)."""
    if override is None:
        if spec.local is not None:
            raise SourceError(f"{what} has no download: pass --source with {spec.local}")
        return spec
    path = Path(override).expanduser().resolve()
    if not path.exists():
        raise SourceError(f"--source {override}: no such file or directory")
    return SourceSpec(path=str(path), sha256=None if path.is_dir() else spec.sha256)


def source_identity(spec: SourceSpec, only: Sequence[str] = ()) -> str:
    """What names a source's content: its sha256, or for a local folder the hash of its tree
    (of the files in `only`, when given)."""
    if spec.sha256:
        return spec.sha256
    if spec.path is None:
        raise SourceError("a downloaded source needs sha256")
    path = Path(spec.path)
    return tree_sha256(path, only) if path.is_dir() else sha256_of(path)
