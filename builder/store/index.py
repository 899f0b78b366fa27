"""Package index pages over cache entries: PEP 503 (HTML), PEP 691 (JSON) and index.json.

One renderer for every place that publishes entries: the local cache's file tree, a shared
store's pages, and `builder cache serve`. A store has a root over everything (simple/) and one per
environment (env/<...>/simple/, builder/store/environments.py); each project page lists one file
per wheel name, the newest entry's, so pip never sees two files of one name with different hashes.

Links are relative to the page (../../entries/<key>/<wheel> from simple/<project>/), so the file
tree, a bucket and the server give the same pages, and a server behind a path prefix still works.
Each file carries what installers use to decide without downloading the wheel: its sha256,
Requires-Python from its METADATA (data-requires-python / "requires-python"), and the sha256 of
that METADATA, stored beside the wheel as <wheel>.metadata (PEP 658, and PEP 714's names for it:
data-dist-info-metadata and data-core-metadata, "dist-info-metadata" and "core-metadata").
"""

from __future__ import annotations

import email.parser
import hashlib
import html
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from builder.store import variants
from builder.store.environments import Environment, environments_of, select

# PEP 691's content types; text/html is PEP 503's, the only one pip <= 22.1 accepts.
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
LEGACY_HTML_TYPE = "text/html"
METADATA_SUFFIX = ".metadata"  # PEP 658: a wheel's METADATA is served at <wheel url>.metadata


@dataclass(frozen=True)
class IndexFile:
    """One wheel on a project page."""

    filename: str
    url: str
    sha256: str
    size: int | None = None
    requires_python: str | None = None
    core_metadata_sha256: str | None = None
    """sha256 of <wheel>.metadata; None when the store has no such file for this wheel."""

    @property
    def version(self) -> str:
        if self.filename.endswith((variants.VARIANTS_SUFFIX, ".whl")) and not _plain_wheel(self.filename):
            return str(Version(self.filename.split("-")[1]))  # a variant wheel or variants file (PEP 825)
        return str(parse_wheel_filename(self.filename)[1])


def _plain_wheel(filename: str) -> bool:
    """Whether a file name is a wheel without a PEP 825 variant label (5 or 6 parts)."""
    parts = filename.removesuffix(".whl").split("-")
    return filename.endswith(".whl") and (len(parts) == 5 or (len(parts) == 6 and parts[2][:1].isdigit()))


def core_metadata_fields(metadata: bytes) -> dict[str, Any]:
    """What an entry records about its wheel's METADATA, for the pages: its sha256 and Requires-Python."""
    parsed = email.parser.BytesParser().parsebytes(metadata, headersonly=True)
    requires = parsed.get("Requires-Python")
    return {"core_metadata_sha256": hashlib.sha256(metadata).hexdigest(),
            "requires_python": str(requires).strip() if requires else None}


def _index_file(meta: Mapping[str, Any], url: str) -> IndexFile:
    size = meta.get("size")
    return IndexFile(str(meta["wheel"]), url, str(meta["sha256"]), int(size) if size is not None else None,
                     meta.get("requires_python"), meta.get("core_metadata_sha256"))


def project_of(filename: str) -> str:
    """The project a wheel, variant wheel or variants file belongs to: its name's first field
    (parse_wheel_filename refuses a variant wheel's label after the tags)."""
    return canonicalize_name(filename.split("-", 1)[0])


def project_files(entries: Iterable[Mapping[str, Any]], url_for: Callable[[Mapping[str, Any]], str],
                  ) -> dict[str, list[IndexFile]]:
    """Files per canonical project name from entry metadata (entry.json contents), oldest entry
    first so the newest of each wheel name wins."""
    newest: dict[str, Mapping[str, Any]] = {}
    for meta in sorted(entries, key=lambda m: str(m.get("created", ""))):
        newest[str(meta["wheel"])] = meta
    projects: dict[str, list[IndexFile]] = {}
    for name in sorted(newest):
        meta = newest[name]
        project = project_of(name)
        projects.setdefault(project, []).append(_index_file(meta, url_for(meta)))
    return projects


def listing(entries: Iterable[Mapping[str, Any]], env: Environment | None = None) -> dict[str, list[IndexFile]]:
    """A root's projects and files: every entry (env None), or in an environment's root every
    project the entries name, each with only the builds that load there (possibly none)."""
    metas = list(entries)
    listed = metas if env is None else select(metas, env)
    up = "../" * (2 + (len(env.path.split("/")) if env else 0))  # from <root>/simple/<project>/ to the store
    projects = project_files(listed, lambda m: f"{up}entries/{m['key']}/{m['wheel']}")
    for meta in metas:
        projects.setdefault(canonicalize_name(parse_wheel_filename(str(meta["wheel"]))[0]), [])
    return dict(sorted(projects.items()))


_HEAD = '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0"></head><body>\n'


def root_html(projects: Iterable[str]) -> str:
    links = "".join(f'<a href="{html.escape(p)}/">{html.escape(p)}</a><br/>\n' for p in sorted(projects))
    return f"{_HEAD}{links}</body></html>\n"


def _link(f: IndexFile) -> str:
    attributes = [f'href="{html.escape(f.url)}#sha256={f.sha256}"']
    if f.requires_python:
        attributes.append(f'data-requires-python="{html.escape(f.requires_python)}"')
    if f.core_metadata_sha256:  # PEP 658's attribute, and PEP 714's name for it (older clients read only the first)
        attributes += [f'data-dist-info-metadata="sha256={f.core_metadata_sha256}"',
                       f'data-core-metadata="sha256={f.core_metadata_sha256}"']
    return f"<a {' '.join(attributes)}>{html.escape(f.filename)}</a><br/>\n"


def project_html(files: Iterable[IndexFile]) -> str:
    return f"{_HEAD}{''.join(_link(f) for f in files)}</body></html>\n"


def root_json(projects: Iterable[str]) -> str:
    return json.dumps({"meta": {"api-version": "1.1"}, "projects": [{"name": p} for p in sorted(projects)]})


def _file_json(f: IndexFile) -> dict[str, Any]:
    data: dict[str, Any] = {"filename": f.filename, "url": f.url, "hashes": {"sha256": f.sha256}}
    if f.requires_python:
        data["requires-python"] = f.requires_python
    metadata = {"sha256": f.core_metadata_sha256} if f.core_metadata_sha256 else False  # PEP 714 (and PEP 658's key)
    data["core-metadata"] = data["dist-info-metadata"] = metadata
    if f.size is not None:
        data["size"] = f.size
    return data


def project_json(project: str, files: Iterable[IndexFile]) -> str:
    """PEP 691 (api-version 1.1: PEP 700's versions and sizes)."""
    listed = list(files)
    versions = sorted({f.version for f in listed}, key=Version)
    return json.dumps({"meta": {"api-version": "1.1"}, "name": project, "versions": versions,
                       "files": [_file_json(f) for f in listed]})


def variant_listing(entries: Iterable[Mapping[str, Any]], root: variants.VariantsRoot,
                    ) -> tuple[dict[str, list[IndexFile]], dict[str, str]]:
    """A variants root's projects (builder/store/variants.py): the newest variant wheel of each file
    name, with its own core metadata where its entry has it, then each version's variants file;
    every project the entries name gets a page, as in an environment's root. Also the variants
    files' contents by their path below the root's simple/ ("<project>/<name>-<version>-variants.json")."""
    metas = list(entries)
    records = variants.members(metas, root)
    up = "../" * (2 + len(root.path.split("/")))  # from <root>/simple/<project>/ to the store
    projects = project_files(records, lambda r: f"{up}entries/{r['key']}/{r['wheel']}")
    documents: dict[str, str] = {}
    for filename, text in variants.variants_files(records).items():
        project = project_of(filename)
        data = text.encode()
        projects.setdefault(project, []).append(IndexFile(filename, filename, hashlib.sha256(data).hexdigest(),
                                                          len(data)))
        documents[f"{project}/{filename}"] = text
    for meta in metas:
        projects.setdefault(project_of(str(meta["wheel"])), [])
    return dict(sorted(projects.items())), documents


def published_pages(entries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Every page of a published store by its path below the store: simple/ over all entries, a
    root per environment the entries were built for (environments_of), and a variants root per
    torch with its variants files (variants.roots_of)."""
    metas = list(entries)
    pages: dict[str, str] = {}
    for env in [None, *environments_of(metas)]:
        root = f"{env.path}/simple" if env else "simple"
        projects = listing(metas, env)
        pages[f"{root}/index.html"] = root_html(projects)
        pages.update({f"{root}/{p}/index.html": project_html(files) for p, files in projects.items()})
    for variants_root in variants.roots_of(metas):
        root = f"{variants_root.path}/simple"
        projects, documents = variant_listing(metas, variants_root)
        pages[f"{root}/index.html"] = root_html(projects)
        pages.update({f"{root}/{p}/index.html": project_html(files) for p, files in projects.items()})
        pages.update({f"{root}/{path}": text for path, text in documents.items()})
    return pages


LISTED_FIELDS = ("key", "wheel", "sha256", "size", "recipe", "version", "created", "object")


def entries_json(entries: Iterable[Mapping[str, Any]]) -> str:
    """index.json: what a reader needs to list a store without fetching every entry.json."""
    listed = [{k: meta[k] for k in LISTED_FIELDS if k in meta} for meta in entries]
    return json.dumps({"format": 1, "entries": sorted(listed, key=lambda m: str(m["key"]))}, indent=1)
