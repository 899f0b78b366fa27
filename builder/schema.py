"""Typed tables: a parsed TOML table checked against a dataclass, and that dataclass's JSON schema.

scikit-build-core's model (its settings dataclasses, settings/json_schema.py and the test that
checks the stored schema): the dataclasses are the one description of a file's keys. A field's
type says what the file may hold (str, int, float, bool, tuple[str, ...], Mapping[str, X], X | None,
Literal choices, SpecifierSet, Path, a nested dataclass or a tuple of them), a field without a
default is a required key, and the field's docstring is the key's description. Field metadata
fits a field to the file:

    key="project"     the file's name for the field
    file=False        derived by the loader, no key of the file (DERIVED)
    file_type=T       what the file holds where it differs from the field's type
    optional=True     the file may leave it out though the field has no default (the loader fills it)
    pattern=(re, w)   a string the regular expression `re` matches whole, `w` in words (`pattern()`)

`check_table` raises the caller's error type naming the key's path and what was expected
(`verify.imports: expected a list of strings, got "x"`); `json_schema` writes the same facts as a
JSON schema (draft 2020-12) for editors.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from builder.errors import BuilderError
from builder.tables import did_you_mean

DERIVED: Mapping[str, Any] = {"file": False}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclasses.dataclass(frozen=True)
class FileKey:
    """One key a table of the file may hold."""

    name: str
    type: Any
    required: bool
    doc: str
    pattern: tuple[str, str] | None = None
    """(regular expression a string value matches whole, what it is in words), if any."""


def pattern(regex: str, words: str) -> Mapping[str, Any]:
    """Field metadata: the file's string must match `regex` whole, e.g. a sha256's 64 hex digits."""
    return {"pattern": (regex, words)}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal right after its annotation in the class body (a
    subclass's own over its bases')."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # no source (a zipped install): descriptions stay empty
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, [*body[1:], None], strict=True):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def file_keys(cls: type) -> tuple[FileKey, ...]:
    """The keys of the table `cls` describes, in field order."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    keys = []
    for item in dataclasses.fields(cls):
        if not item.metadata.get("file", True):
            continue
        has_default = item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING
        keys.append(FileKey(name=item.metadata.get("key", item.name),
                            type=item.metadata.get("file_type", hints[item.name]),
                            required=not has_default and not item.metadata.get("optional", False),
                            doc=docs.get(item.name, ""), pattern=item.metadata.get("pattern")))
    return tuple(keys)


class Mismatch(Exception):
    """A value of the file that does not fit its type, and where it is."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def check_table(data: Any, cls: type, where: str, error: type[BuilderError]) -> None:
    """Raise `error` ("<where>: <key path>: <what is wrong>") for the first value of `data` that does
    not fit the table `cls` describes: a wrong type, a missing key, an unknown one (with the
    closest known key), a value outside its choices."""
    try:
        check_value(data, cls, "")
    except Mismatch as exc:
        raise error(f"{where}: {exc}") from None


def check_value(value: Any, kind: Any, path: str) -> None:
    """Check one value against a type of the vocabulary above; Mismatch naming `path` if it does not fit."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        _check_dataclass(value, typing.cast(type, kind), path)
    elif origin in (types.UnionType, typing.Union):
        check_value(value, next(arg for arg in args if arg is not type(None)), path)
    elif origin is Literal:
        if value not in args:
            close = did_you_mean(value, [str(arg) for arg in args]) if isinstance(value, str) else ""
            suggestion = close if "did you mean" in close else ""
            raise Mismatch(path, f"expected {describe(kind)}, got {_shown(value)}{suggestion}")
    elif origin is tuple:
        if not isinstance(value, list):
            raise Mismatch(path, f"expected {describe(kind)}, got {_shown(value)}")
        for index, item in enumerate(value):
            check_value(item, args[0], f"{path}[{index}]")
    elif origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, dict):
            raise Mismatch(path, f"expected {describe(kind)}, got {_shown(value)}")
        for key, item in value.items():
            check_value(item, args[1], _join(path, key))
    elif kind is SpecifierSet:
        _check_specifier(value, path)
    elif not _is_scalar(value, kind):
        raise Mismatch(path, f"expected {describe(kind)}, got {_shown(value)}")


def _check_dataclass(value: Any, cls: type, path: str) -> None:
    if not isinstance(value, dict):
        raise Mismatch(path, f"expected a table, got {_shown(value)}")
    keys = {key.name: key for key in file_keys(cls)}
    for name in value:
        if name not in keys:
            raise Mismatch(path, f"unknown key {name!r}{did_you_mean(str(name), keys)}")
    for key in keys.values():
        if key.name in value:
            check_value(value[key.name], key.type, _join(path, key.name))
            _check_pattern(value[key.name], key.pattern, _join(path, key.name))
        elif key.required:
            raise Mismatch(path, f"missing required key {key.name!r}")


def _check_pattern(value: Any, expected: tuple[str, str] | None, path: str) -> None:
    if expected is not None and isinstance(value, str) and not re.fullmatch(expected[0], value):
        raise Mismatch(path, f"expected {expected[1]}, got {_shown(value)}")


def _check_specifier(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise Mismatch(path, f"expected {describe(SpecifierSet)}, got {_shown(value)}")
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise Mismatch(path, f"bad version range {value!r}") from None


def _is_scalar(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in (str, Path):
        return isinstance(value, str)
    raise TypeError(f"no file type for {kind!r}")  # a dataclass field of a type this module does not know


def describe(kind: Any) -> str:
    """What a value of `kind` is, in words: "a list of strings", "one of "a", "b""."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return "a table"
    if origin in (types.UnionType, typing.Union):
        return describe(next(arg for arg in args if arg is not type(None)))
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(arg) for arg in args)
    if origin is tuple:
        inner = describe(args[0])
        return "a list of " + ("tables" if inner == "a table" else _plural(inner))
    if origin in (Mapping, dict, typing.Mapping):
        return "a table of " + _plural(describe(args[1]))
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", Path: "a path",
             SpecifierSet: 'version specifiers (a string such as ">=2.2,<3")'}
    return words[kind]


def _plural(words: str) -> str:
    for single, many in (("a list of", "lists of"), ("a table of", "tables of"), ("a string", "strings"),
                         ("a path", "paths"), ("a number", "numbers"), ("a whole number", "whole numbers"),
                         ("a table", "tables")):
        if words.startswith(single):
            return many + words[len(single):]
    return words


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, list, dict)):
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = ""
        if text and len(text) <= 60:
            return text
        return "a list" if isinstance(value, list) else "a table" if isinstance(value, dict) else text[:57] + "..."
    return f"{type(value).__name__} {value}"


def _join(path: str, key: Any) -> str:
    text = str(key)
    part = text if _BARE_KEY.match(text) else json.dumps(text)
    return f"{path}.{part}" if path else part


def json_schema(cls: type, *, title: str, description: str) -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of the table `cls` describes, each dataclass once under $defs."""
    defs: dict[str, Any] = {}
    _schema_of(cls, defs)
    root = {key: value for key, value in defs.pop(cls.__name__).items() if key != "description"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, "description": description,
            **root, "$defs": dict(sorted(defs.items()))}


def _schema_of(kind: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        cls = typing.cast(type, kind)
        if cls.__name__ not in defs:
            defs[cls.__name__] = {}  # reserved first: a table that holds itself refers to itself
            keys = file_keys(cls)
            schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
            doc = inspect.getdoc(cls)
            if doc and not doc.startswith(f"{cls.__name__}("):
                schema["description"] = " ".join(doc.split("\n\n")[0].split())
            schema["properties"] = {key.name: {**_schema_of(key.type, defs),
                                               **({"pattern": f"^{key.pattern[0]}$"} if key.pattern else {}),
                                               **({"description": key.doc} if key.doc else {})} for key in keys}
            required = [key.name for key in keys if key.required]
            if required:
                schema["required"] = required
            defs[cls.__name__] = schema
        return {"$ref": f"#/$defs/{cls.__name__}"}
    if origin in (types.UnionType, typing.Union):
        return _schema_of(next(arg for arg in args if arg is not type(None)), defs)
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        return {"type": "array", "items": _schema_of(args[0], defs)}
    if origin in (Mapping, dict, typing.Mapping):
        return {"type": "object", "additionalProperties": _schema_of(args[1], defs)}
    if kind is SpecifierSet:
        return {"type": "string", "format": "pep440-specifiers"}
    return {"type": {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}[kind]}
