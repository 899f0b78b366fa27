"""Writing a new release into a recipe's TOML, comments and order kept.

tomlkit edits the values in place (a widened `when` range, a variant's `versions`,
default_version); the new [versions."X"] table is written in the recipe's own style, one inline
`source = { ... }` line plus the keys the newest version carries (requires, backend), and put
above the newest version older than it (the recipes list their versions newest first) and above
the comment that version's table opens with.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

import tomlkit
from packaging.version import Version

from builder.errors import RecipeError
from builder.planning.source_spec import SourceSpec

_VERSION_HEADER = re.compile(r"""^\[\s*versions\s*\.\s*(?:"([^"]*)"|'([^']*)')\s*\]\s*(?:#.*)?$""")
_ANY_HEADER = re.compile(r"^\[")
SOURCE_KEYS = ("pypi", "url", "file", "sha256")


def source_line(spec: SourceSpec) -> str:
    """`source = { pypi = "...", file = "...", sha256 = "..." }`, the recipes' one-line style."""
    fields = [(key, getattr(spec, key)) for key in SOURCE_KEYS if getattr(spec, key) is not None]
    return "source = { " + ", ".join(f"{key} = {tomlkit.string(value).as_string()}" for key, value in fields) + " }"


def add_version(text: str, version: str, spec: SourceSpec, *, carried: Mapping[str, str],
                patch_ranges: Mapping[int, str], variant_ranges: Mapping[str, str], make_default: bool) -> str:
    """The recipe text with [versions."`version`"] added, the given patches' (by index) and
    variants' version ranges replaced, and default_version set when `make_default`."""
    document = tomlkit.parse(text)
    versions: Any = document.get("versions")
    if versions is None or version in versions:
        raise RecipeError(f"the recipe {'already has' if versions is not None else 'has no versions for'} {version}")
    patches: Any = document.get("patches", [])
    for index, new_range in patch_ranges.items():
        patches[index]["when"]["version"] = new_range
    variants: Any = document.get("variants", {})
    for name, new_range in variant_ranges.items():
        variants[name]["versions"] = new_range
    if make_default:
        document["default_version"] = version
    table = "\n".join([f'[versions."{version}"]', source_line(spec),
                       *(f"{key} = {value}" for key, value in carried.items())]) + "\n"
    edited = _insert_table(tomlkit.dumps(document), version, table)
    parsed = tomllib.loads(edited)  # what was written must read back as written
    if str(parsed["versions"][version]["source"].get("sha256")) != str(spec.sha256):  # pragma: no cover
        raise RecipeError(f"the new [versions.\"{version}\"] table did not read back")
    return edited


def _insert_table(text: str, version: str, table: str) -> str:
    """`table` above the first [versions."X"] header (in file order) whose X is older than
    `version`; after the last version table when every one is newer."""
    lines = text.splitlines(keepends=True)
    headers = [(index, Version(match[1] if match[1] is not None else match[2]))
               for index, line in enumerate(lines) if (match := _VERSION_HEADER.match(line.strip()))]
    if not headers:
        raise RecipeError('the recipe writes no [versions."X"] tables; add the version by hand')
    older = [index for index, known in headers if known < Version(version)]
    if older:
        at = older[0]
    else:
        at = next((i for i in range(headers[-1][0] + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines))
    while at > 0 and lines[at - 1].lstrip().startswith("#"):  # the comment on the next table stays on it
        at -= 1
    if at and lines[at - 1].strip():
        table = "\n" + table
    return "".join(lines[:at]) + table + "\n" + "".join(lines[at:])
