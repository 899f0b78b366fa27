"""The build's `ninja`: a wrapper that prepares build.ninja for the compile gate, then runs the
real ninja. It

- puts the gate in front of torch's `nvcc` variable where torch did not: torch 2.0.1's
  cpp_extension has no PYTORCH_NVCC and writes `nvcc = $CUDA_HOME/bin/nvcc`; torch 2.14.1's
  writes PYTORCH_NVCC's value (torch/utils/cpp_extension.py), which is already the gate.
  BUILDER_NVCC_LAUNCHER is what goes in front (the gate, and sccache with --ccache);
- reorders the build statements heaviest first by the expected compile times (hints.json);
- adds the sources this ninja run compiles to planned.json, for the gate's split decisions (a
  setup.py building its extensions at once runs a ninja for each, side by side).

Heaviest first:

ninja (1.13.2, PyPI's) starts ready edges by critical-path weight, and every compile edge of these
builds has the same one, so ties decide: the earlier statement in the file starts first (checked:
two edges swapped in the file swap their start order under -j1, tests/test_costs.py). torch
extensions' build.ninja lists the sources as setuptools passes them: sorted by path
(setuptools/_distutils/command/build_ext.py, `sources = sorted(sources)`). Statements
are reordered only within runs of consecutive `build` blocks (a top-level variable between them
keeps its place), slowest first; unrecorded ones keep their order after the recorded ones. The
meaning of a ninja file does not depend on statement order within such a run.

A file's weight is its recorded CPU seconds (its work, whatever threads it was split over), else
its wall seconds.

Runs as a script with the real ninja as its first argument: `python builder/building/ninja_order.py
REAL_NINJA ARGS...`; hints.json and planned.json live in BUILDER_GATE_DIR, paths are made relative
to BUILDER_GATE_SOURCE_ROOT like the gate's records. ninja's tools (`-t ...`) and `--version`
pass straight through.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from pathlib import Path

from filelock import FileLock


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


SOURCE_SUFFIXES = (".cu", ".cpp", ".cc", ".cxx", ".c")
NVCC_VARIABLE = re.compile(r"^nvcc = (.+)$", re.M)


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


def planned(text: str, directory: Path, root: str) -> list[str]:
    """The sources the build statements compile (their first inputs with a source suffix)."""
    sources = (first_input(block, directory) for block in blocks(text) if block[0].startswith("build "))
    return [key_of(source, root) for source in sources if source and source.endswith(SOURCE_SUFFIXES)]


def gate_nvcc(text: str, launcher: str) -> str:
    """build.ninja with `launcher` in front of the top-level `nvcc` variable, unless it is there."""
    if not launcher:
        return text

    def put(match: re.Match[str]) -> str:
        value = match[1].strip()
        return match[0] if value.split()[0] == launcher.split()[0] else f"nvcc = {launcher} {value}"
    return NVCC_VARIABLE.sub(put, text, count=1)


def weights(hints: dict[str, dict[str, float]]) -> dict[str, float]:
    return {file: float(h.get("cpu_s") or h.get("wall_s") or 0.0) for file, h in hints.items()}


def prepare(path: Path, gate_dir: Path, root: str, launcher: str) -> None:
    """Gate nvcc, reorder, and list the planned sources of one build.ninja."""
    hints_file = gate_dir / "hints.json"
    text = path.read_text()
    prepared = gate_nvcc(text, launcher)
    if hints_file.is_file():
        prepared = reorder(prepared, path.parent, weights(json.loads(hints_file.read_text())), root)
    if prepared != text:
        path.write_text(prepared)
    add_planned(gate_dir, planned(prepared, path.parent, root))


def add_planned(gate_dir: Path, sources: list[str]) -> None:
    """Add a ninja run's sources to the build's planned.json (the runs before it, or beside it, keep
    theirs: the gate leaves out the files already started)."""
    listed, part = gate_dir / "planned.json", gate_dir / "planned.json.part"
    with FileLock(str(gate_dir / "planned.lock")):
        known = json.loads(listed.read_text()) if listed.is_file() else []
        part.write_text(json.dumps(known + [source for source in sources if source not in known]))
        os.replace(part, listed)  # whole: the gate reads it without this lock


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
    path = build_file(rest)
    if gate_dir.is_dir() and path.is_file() and not {"-t", "--version"}.intersection(rest):
        prepare(path, gate_dir, os.environ.get("BUILDER_GATE_SOURCE_ROOT", ""),
                os.environ.get("BUILDER_NVCC_LAUNCHER", ""))
    os.execv(real, [real, *rest])
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
