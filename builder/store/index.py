"""Package index pages over cache entries: PEP 503 (HTML), PEP 691 (JSON) and index.json.

One renderer for every place that publishes entries: the local cache's simple/ tree, a shared
store's pages, and `builder cache serve`. Each project page lists one file per wheel name, the
newest entry's, so pip never sees two files of one name with different hashes.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

# PEP 691's content types; text/html is PEP 503's legacy form of the HTML one.
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"


@dataclass(frozen=True)
class IndexFile:
    """One wheel on a project page."""

    filename: str
    url: str
    sha256: str


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
        project = canonicalize_name(parse_wheel_filename(name)[0])
        projects.setdefault(project, []).append(IndexFile(name, url_for(meta), str(meta["sha256"])))
    return projects


def root_html(projects: Iterable[str]) -> str:
    links = "\n".join(f'<a href="{html.escape(p)}/">{html.escape(p)}</a><br/>' for p in sorted(projects))
    return f'<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0"></head>' \
           f"<body>\n{links}\n</body></html>\n"


def project_html(files: Iterable[IndexFile]) -> str:
    links = "\n".join(f'<a href="{html.escape(f.url)}#sha256={f.sha256}">{html.escape(f.filename)}</a><br/>'
                      for f in files)
    return f'<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0"></head>' \
           f"<body>\n{links}\n</body></html>\n"


def root_json(projects: Iterable[str]) -> str:
    return json.dumps({"meta": {"api-version": "1.0"},
                       "projects": [{"name": p} for p in sorted(projects)]})


def project_json(project: str, files: Iterable[IndexFile]) -> str:
    return json.dumps({"meta": {"api-version": "1.0"}, "name": project,
                       "files": [{"filename": f.filename, "url": f.url, "hashes": {"sha256": f.sha256}}
                                 for f in files]})


LISTED_FIELDS = ("key", "wheel", "sha256", "size", "recipe", "version", "created", "object")


def entries_json(entries: Iterable[Mapping[str, Any]]) -> str:
    """index.json: what a reader needs to list a store without fetching every entry.json."""
    listed = [{k: meta[k] for k in LISTED_FIELDS if k in meta} for meta in entries]
    return json.dumps({"format": 1, "entries": sorted(listed, key=lambda m: str(m["key"]))}, indent=1)
