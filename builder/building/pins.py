"""Dependency-pin rewriting in a package's own build files, so that neither pip nor the package's
metadata asks for another torch.

A recipe's [deps] names requirements to drop and to pin to the target's version (`torch` becomes
`torch==2.14.1`); with `rewrite = ["setup.py", "pyproject.toml"]` the same rules edit those files
before the build:
- setup.py through its AST: the lists given to setup()'s install_requires, setup_requires,
  tests_require and extras_require (literals, or module-level names bound to literals, also
  through **kwargs dicts); each matching element's source text is replaced or removed, the rest
  of the file stays byte for byte;
- pyproject.toml through tomlkit (formatting kept): [project] dependencies and
  optional-dependencies, [build-system] requires.
Every rule must match somewhere, or nothing is written and the error names what was found.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import PatchError
from builder.planning.requirements import RequirementRules, requirement_name

REQUIREMENT_KEYWORDS = ("install_requires", "setup_requires", "tests_require", "extras_require")


@dataclass(frozen=True)
class PinChange:
    """One edited requirement."""

    file: str
    before: str
    after: str | None

    def describe(self) -> str:
        return f"{self.file}: {self.before} -> {self.after if self.after is not None else '(dropped)'}"


def rewrite_tree(tree: Path, files: tuple[str, ...], rules: RequirementRules) -> list[PinChange]:
    """Apply the rules to `files` under `tree`; all or nothing."""
    texts = {name: read_text(tree / name) for name in files}
    results = {name: rewrite_text(name, text, rules) for name, text in texts.items() if text is not None}
    changes = [c for _, found in results.values() for c in found]
    check_all_matched(rules, changes, results, texts)
    for name, (new_text, found) in results.items():
        if found:
            (tree / name).write_text(new_text, encoding="utf-8")
    return changes


def preview(texts: Mapping[str, str | None], rules: RequirementRules) -> list[PinChange]:
    """The changes rewrite_tree would make to these file contents (for `builder plan`)."""
    results = {name: rewrite_text(name, text, rules) for name, text in texts.items() if text is not None}
    changes = [c for _, found in results.values() for c in found]
    check_all_matched(rules, changes, results, texts)
    return changes


def read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def rewrite_text(name: str, text: str, rules: RequirementRules) -> tuple[str, list[PinChange]]:
    if Path(name).name == "pyproject.toml":
        return rewrite_pyproject(name, text, rules)
    return rewrite_setup_py(name, text, rules)


def check_all_matched(rules: RequirementRules, changes: list[PinChange], results: Mapping[str, object],
                      texts: Mapping[str, str | None]) -> None:
    if not results:
        raise PatchError(f"none of {', '.join(texts)} exists in the source, so the pins cannot be rewritten")
    matched = {requirement_name(c.before) for c in changes}
    missing = sorted(rules.names() - matched)
    if missing:
        found = sorted({n for file, text in texts.items() if text is not None for n in listed_names(file, text)})
        raise PatchError(f"no requirement {', '.join(map(repr, missing))} in {', '.join(results)} "
                         f"(found: {', '.join(found) or 'none'})",
                         hint="fix the recipe's [deps] drop / pin_to_target, or its rewrite list")


def listed_names(file: str, text: str) -> set[str]:
    """Requirement names a build file lists, for error messages."""
    try:
        return {requirement_name(r) or r for r in listed_requirements(file, text)}
    except PatchError:
        return set()


def listed_requirements(file: str, text: str) -> list[str]:
    """Every requirement a build file lists (the lists rewrite_text edits), read, never run:
    setup.py's setup() keywords by AST, pyproject.toml's [project] and [build-system] by tomlkit."""
    if Path(file).name == "pyproject.toml":
        import tomlkit

        try:
            return [str(r) for a in _pyproject_arrays(tomlkit.parse(text)) for r in a]
        except Exception as exc:  # tomlkit raises its own ParseError family
            raise PatchError(f"{file} is not valid TOML ({exc})") from exc
    try:
        return list(_setup_py_requirements(text))
    except SyntaxError as exc:
        raise PatchError(f"{file} does not parse ({exc.msg}, line {exc.lineno})") from exc


# --- setup.py ---------------------------------------------------------------------------------

def rewrite_setup_py(name: str, text: str, rules: RequirementRules) -> tuple[str, list[PinChange]]:
    try:
        module = ast.parse(text)
    except SyntaxError as exc:
        raise PatchError(f"{name} does not parse ({exc.msg}, line {exc.lineno}); cannot rewrite its pins") from exc
    data = text.encode("utf-8")
    starts = _line_starts(data)
    edits: list[tuple[int, int, str]] = []
    changes = []
    for elements in _requirement_lists(module):
        for index, node in enumerate(elements):
            before = _requirement_text(node, data, starts)
            if before is None or requirement_name(before) not in rules.names():
                continue
            after = rules.rewrite(before)
            begin, end = _offset(node.lineno, node.col_offset, starts), _end(node, starts)
            if after is None:  # remove the element with its separator
                if index + 1 < len(elements):
                    end = _offset(elements[index + 1].lineno, elements[index + 1].col_offset, starts)
                elif index > 0:
                    begin = _end(elements[index - 1], starts)
                edits.append((begin, end, ""))
            else:
                edits.append((begin, end, '"' + after.replace('"', '\\"') + '"'))
            changes.append(PinChange(name, before, after))
    for begin, end, replacement in sorted(set(edits), reverse=True):
        data = data[:begin] + replacement.encode("utf-8") + data[end:]
    new_text = data.decode("utf-8")
    ast.parse(new_text)  # the rewrite must leave valid Python
    return new_text, changes


def _setup_py_requirements(text: str) -> Iterator[str]:
    data = text.encode("utf-8")
    starts = _line_starts(data)
    for elements in _requirement_lists(ast.parse(text)):
        for node in elements:
            found = _requirement_text(node, data, starts)
            if found is not None:
                yield found


def _requirement_lists(module: ast.Module) -> Iterator[list[ast.expr]]:
    """The element lists of every requirement list setup() is given (each list once)."""
    bindings = {target.id: node.value for node in module.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}

    def resolve(value: ast.expr) -> ast.expr:
        return bindings.get(value.id, value) if isinstance(value, ast.Name) else value

    def lists_in(value: ast.expr) -> Iterator[list[ast.expr]]:
        value = resolve(value)
        if isinstance(value, (ast.List, ast.Tuple)):
            yield value.elts
        elif isinstance(value, ast.Dict):  # extras_require
            for item in value.values:
                yield from lists_in(item)

    seen: set[int] = set()
    for call in ast.walk(module):
        if not (isinstance(call, ast.Call) and _is_setup(call.func)):
            continue
        for keyword in call.keywords:
            values = _keyword_values(keyword, resolve)
            for value in values:
                for elements in lists_in(value):
                    if id(elements) not in seen:
                        seen.add(id(elements))
                        yield elements


def _keyword_values(keyword: ast.keyword, resolve: Any) -> list[ast.expr]:
    if keyword.arg in REQUIREMENT_KEYWORDS:
        return [keyword.value]
    spread = resolve(keyword.value) if keyword.arg is None else None
    if isinstance(spread, ast.Dict):  # setup(**common_kwargs)
        return [v for k, v in zip(spread.keys, spread.values, strict=True)
                if isinstance(k, ast.Constant) and k.value in REQUIREMENT_KEYWORDS]
    return []


def _is_setup(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "setup") or \
        (isinstance(func, ast.Attribute) and func.attr == "setup")


def _requirement_text(node: ast.expr, data: bytes, starts: list[int]) -> str | None:
    """A list element's requirement: a string literal's value, or an f-string's source text."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        source = data[_offset(node.lineno, node.col_offset, starts):_end(node, starts)].decode("utf-8")
        return source[1:].strip("\"'") if source[:1] in "fF" else source
    return None


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    for index, byte in enumerate(data):
        if byte == 0x0A:
            starts.append(index + 1)
    return starts


def _offset(lineno: int, col: int, starts: list[int]) -> int:
    return starts[lineno - 1] + col  # ast columns are UTF-8 byte offsets


def _end(node: ast.expr, starts: list[int]) -> int:
    assert node.end_lineno is not None and node.end_col_offset is not None
    return _offset(node.end_lineno, node.end_col_offset, starts)


# --- pyproject.toml ---------------------------------------------------------------------------

def rewrite_pyproject(name: str, text: str, rules: RequirementRules) -> tuple[str, list[PinChange]]:
    import tomlkit  # only pyproject.toml rewrites need it

    try:
        document = tomlkit.parse(text)
    except Exception as exc:  # tomlkit raises its own ParseError family
        raise PatchError(f"{name} is not valid TOML ({exc}); cannot rewrite its pins") from exc
    changes: list[PinChange] = []
    for array in _pyproject_arrays(document):
        found = []
        for index in reversed(range(len(array))):  # from the end, so deletions keep indexes valid
            before = str(array[index])
            if requirement_name(before) not in rules.names():
                continue
            after = rules.rewrite(before)
            if after is None:
                del array[index]
            else:
                array[index] = after
            found.append(PinChange(name, before, after))
        changes += reversed(found)
    return tomlkit.dumps(document), changes


def _pyproject_arrays(document: Any) -> Iterator[Any]:
    project = document.get("project", {})
    if "dependencies" in project:
        yield project["dependencies"]
    yield from project.get("optional-dependencies", {}).values()
    build_system = document.get("build-system", {})
    if "requires" in build_system:
        yield build_system["requires"]
