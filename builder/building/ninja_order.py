"""Heaviest first: a `ninja` wrapper that reorders build.ninja's build statements by the last
build's recorded compile times before running the real ninja.

ninja (1.13.2, PyPI's) starts ready edges by critical-path weight, and every compile edge of these
builds has the same one, so ties decide: the earlier statement in the file starts first (checked:
two edges swapped in the file swap their start order under -j1, tests/test_costs.py). torch
extensions' build.ninja lists the sources as setuptools passes them: sorted by path
(setuptools/_distutils/command/build_ext.py, `sources = sorted(sources)`). Statements
are reordered only within runs of consecutive `build` blocks (a top-level variable between them
keeps its place), slowest first; unrecorded ones keep their order after the recorded ones. The
meaning of a ninja file does not depend on statement order within such a run.

Runs as a script with the real ninja as its first argument: `python builder/ninja_order.py
REAL_NINJA ARGS...`; hints.json comes from BUILDER_GATE_DIR, paths are made relative to
BUILDER_GATE_SOURCE_ROOT like the gate's records.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path


def blocks(text: str) -> list[list[str]]:
    """Top-level statements, each with its indented and continued lines."""
    out: list[list[str]] = []
    continued = False
    for line in text.splitlines(keepends=True):
        if out and (continued or line[:1] in (" ", "\t")):
            out[-1].append(line)
        else:
            out.append([line])
        continued = line.rstrip("\r\n").endswith("$")
    return out


def first_input(block: list[str], directory: Path) -> str | None:
    """The first explicit input of a build statement, as an absolute path."""
    head = block[0].rstrip("\r\n")
    if not head.startswith("build ") or ":" not in head:
        return None
    _, _, rest = head.replace("$ ", "\0").partition(": ")
    words = rest.split()
    if len(words) < 2 or words[1] in ("|", "||"):
        return None
    return str((directory / words[1].replace("\0", " ")).resolve())


def key_of(path: str, root: str) -> str:
    return os.path.relpath(path, root) if root and path.startswith(root.rstrip("/") + "/") else path


def reorder(text: str, directory: Path, walls: dict[str, float], root: str) -> str:
    """build.ninja with each run of build statements sorted slowest first (stable for the rest)."""
    def weight(block: list[str]) -> float:
        source = first_input(block, directory)
        return walls.get(key_of(source, root), -1.0) if source else -1.0

    result: list[list[str]] = []
    run: list[list[str]] = []
    for block in blocks(text):
        if block[0].startswith("build "):
            run.append(block)
            continue
        result.extend(sorted(run, key=weight, reverse=True))
        run = []
        result.append(block)
    result.extend(sorted(run, key=weight, reverse=True))
    return "".join(line for block in result for line in block)


def build_file(args: list[str]) -> Path:
    """The build.ninja a ninja command line reads (-C DIR, -f FILE)."""
    directory, name = Path.cwd(), "build.ninja"
    for flag, value in itertools.pairwise(args):
        if flag == "-C":
            directory = directory / value
        elif flag == "-f":
            name = value
    return directory / name


def main(args: list[str]) -> int:
    real, rest = args[0], args[1:]
    gate_dir = Path(os.environ.get("BUILDER_GATE_DIR", ""))
    hints_file = gate_dir / "hints.json"
    path = build_file(rest)
    if hints_file.is_file() and path.is_file():
        walls = {file: float(h["wall_s"]) for file, h in json.loads(hints_file.read_text()).items()}
        text = path.read_text()
        ordered = reorder(text, path.parent, walls, os.environ.get("BUILDER_GATE_SOURCE_ROOT", ""))
        if ordered != text:
            path.write_text(ordered)
    os.execv(real, [real, *rest])
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
