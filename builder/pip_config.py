"""The index pip is configured with, and where that is set: what users behind a mirror already did
(`pip config set global.index-url <mirror>/simple`), read so that builder's downloads follow it.

pip itself answers: `pip config debug` lists every configuration file of each kind, whether it
exists, and the values of that kind (pip/_internal/commands/configuration.py@23.2, `list_config_values`),
plus the PIP_* variables. pip merges the kinds in its override order, global < user < site <
PIP_CONFIG_FILE < PIP_* variables (pip/_internal/configuration.py@23.2, OVERRIDE_ORDER), then reads
a command's own section over [global] (pip/_internal/cli/parser.py, `_get_ordered_configuration_items`).
The interpreter running builder is asked first (its venv's own pip.conf counts); where it has no
pip (e.g. `uv tool install`), the pip on PATH.
"""

from __future__ import annotations

import configparser
import functools
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from builder.process import capture

OVERRIDE_ORDER = ("global", "user", "site", "env", "env_var")
"""pip's kinds of configuration, lowest first ("env": the file PIP_CONFIG_FILE names)."""
SECTIONS = (":env:", "download", "install", "global")
"""The sections an option is read from, first found winning: PIP_* variables, then the sections of
the commands that download (`pip download`, `pip install`), then [global]."""

_KIND = re.compile(r"^(?P<kind>\w+):$")
_FILE = re.compile(r"^  (?P<path>.+), exists: (?P<exists>True|False)$")
_VALUE = re.compile(r"^    (?P<section>[^.\s]+)\.(?P<key>[\w-]+): (?P<value>.*)$")
_VARIABLE = re.compile(r"^  PIP_(?P<name>\w+)='(?P<value>.*)'$")


@dataclass(frozen=True)
class PipSetting:
    """One option as pip would use it: its value and where it was set."""

    value: str
    where: str
    """A file ("/home/u/.config/pip/pip.conf, [global]") or a variable ("PIP_INDEX_URL")."""


def pip_setting(key: str, environ: Mapping[str, str] | None = None) -> PipSetting | None:
    """The value pip's configuration gives `key` (e.g. "index-url") for a download, or None."""
    found = _configuration(tuple(sorted((environ or {}).items())) if environ is not None else None)
    for section in SECTIONS:
        if (setting := found.get((section, key))) is not None and setting.value.strip():
            return setting
    return None


@functools.cache
def _configuration(environ: tuple[tuple[str, str], ...] | None) -> dict[tuple[str, str], PipSetting]:
    """(section, key) -> value and origin, merged in pip's override order."""
    files, values = _parse(_debug_output(dict(environ) if environ is not None else None))
    merged: dict[tuple[str, str], PipSetting] = {}
    for kind in OVERRIDE_ORDER:
        for (section, key), (value, variable) in values.get(kind, {}).items():
            where = variable or _defining_file(files.get(kind, []), section, key)
            merged[section, key] = PipSetting(value, where)
    return merged


def _parse(output: str) -> tuple[dict[str, list[str]], dict[str, dict[tuple[str, str], tuple[str, str | None]]]]:
    """`pip config debug`'s existing files per kind, and its values per kind: (section, key) ->
    (value, the PIP_* variable that set it, if one did)."""
    files: dict[str, list[str]] = {}
    values: dict[str, dict[tuple[str, str], tuple[str, str | None]]] = {}
    kind = ""
    for line in output.splitlines():
        if match := _KIND.match(line):
            kind = match["kind"]
        elif (match := _FILE.match(line)) and match["exists"] == "True":
            files.setdefault(kind, []).append(match["path"])
        elif match := _VALUE.match(line):
            values.setdefault(kind, {})[match["section"], match["key"]] = (match["value"], None)
        elif (match := _VARIABLE.match(line)) and kind == "env_var":
            key = match["name"].lower().replace("_", "-")
            values.setdefault(kind, {})[":env:", key] = (match["value"], f"PIP_{match['name']}")
    return files, values


def _debug_output(env: Mapping[str, str] | None) -> str:
    """`pip config debug` of this interpreter, else of the pip on PATH; "" when there is none."""
    commands = [[sys.executable, "-m", "pip", "config", "debug"]]
    search = env.get("PATH") if env is not None else None
    commands += [[found, "config", "debug"] for name in ("pip", "pip3")
                 if (found := shutil.which(name, path=search)) is not None]
    for command in commands:
        result = capture(command, env=env, timeout=60)
        if result.returncode == 0:
            return result.stdout
    return ""


def _defining_file(files: list[str], section: str, key: str) -> str:
    """The file of one kind that sets section.key: pip prints a kind's merged values under each of
    its files, so the files are read here to tell which one (the last one wins, as in pip)."""
    for path in reversed(files):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_section(section) and any(_normal(option) == key for option in parser.options(section)):
            return f"{path}, [{section}]"
    return f"{' or '.join(files) or 'a pip configuration file'}, [{section}]"


def _normal(option: str) -> str:
    """pip's spelling of an option name (pip/_internal/configuration.py, `_normalize_name`)."""
    name = option.lower().replace("_", "-")
    return name[2:] if name.startswith("--") else name
