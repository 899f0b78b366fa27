"""Applying a recipe's patches: each a unified diff, all or nothing, failures named by hunk.

`try_patches` is the same check for a release a recipe does not know yet (`builder recipe check`):
every patch tried in order on a scratch tree, each result kept, with the text of a failing hunk.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.errors import PatchError
from builder.planning.recipe import Patch
from builder.process import capture, require_program

_FAILED_RE = re.compile(r"Hunk #(\d+) FAILED at (\d+)")
_FILE_RE = re.compile(r"(?:patching|checking) file (\S+)")
_HUNK_RE = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


@dataclass(frozen=True)
class HunkFailure:
    """A hunk GNU patch could not place: the file, the hunk's number in that file, where it looked."""

    file: str
    hunk: int
    line: int
    text: str
    """The hunk as the patch file has it (its @@ line and body)."""

    def describe(self) -> str:
        return f"{self.file} hunk #{self.hunk} (at line {self.line})"


@dataclass(frozen=True)
class DryRun:
    """Whether a patch applies to a tree with no fuzz, and if not, why."""

    file: str
    applies: bool
    failure: str = ""
    """GNU patch's reason: the first failed hunk, or its last line (a missing file)."""
    hunks: tuple[HunkFailure, ...] = ()


def _failure(output: str) -> str:
    """'setup.py hunk #2 (at line 120)' from GNU patch's output, or its last line."""
    failed = _failed_hunks(output)
    if failed:
        return f"{failed[0][0]} hunk #{failed[0][1]} (at line {failed[0][2]})"
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _failed_hunks(output: str) -> list[tuple[str, int, int]]:
    """(file, hunk number, line) of every hunk GNU patch reports FAILED."""
    current, failed = "?", []
    for line in output.splitlines():
        if match := _FILE_RE.search(line):
            current = match[1]
        if match := _FAILED_RE.search(line):
            failed.append((current, int(match[1]), int(match[2])))
    return failed


def _patch_args(path: Path) -> list[str]:
    patch_program = require_program("patch", hint="install GNU patch (apt-get install patch)")
    return [patch_program, "-p1", "--forward", "--batch", "--fuzz=0", "-i", str(path)]


def dry_run(patch: Patch, tree: Path) -> DryRun:
    """`patch --dry-run` of one patch against `tree`, which stays untouched."""
    result = capture([*_patch_args(patch.path), "--dry-run"], cwd=tree)
    if result.returncode == 0:
        return DryRun(patch.file, True)
    output = result.stdout + result.stderr
    hunks = tuple(HunkFailure(file, number, line, hunk_text(patch.path, file, number))
                  for file, number, line in _failed_hunks(output))
    return DryRun(patch.file, False, _failure(output), hunks)


def apply_patches(patches: Sequence[Patch], tree: Path) -> None:
    """Apply each patch with -p1 and no fuzz; a dry run first, so a failure changes nothing."""
    for patch in patches:
        dry = dry_run(patch, tree)
        if not dry.applies:
            raise PatchError(f"patch {patch.file} does not apply: {dry.failure}",
                             hint="the patch's `when` range may need narrowing for this version")
        _apply(patch, tree)


def try_patches(patches: Sequence[Patch], tree: Path) -> list[DryRun]:
    """Each patch tried in order on `tree` (a scratch copy: those that apply are applied, so the
    next one sees the tree a build would); every result kept, none raised."""
    results = []
    for patch in patches:
        dry = dry_run(patch, tree)
        if dry.applies:
            _apply(patch, tree)
        results.append(dry)
    return results


def _apply(patch: Patch, tree: Path) -> None:
    done = capture(_patch_args(patch.path), cwd=tree)
    if done.returncode != 0:  # pragma: no cover - the dry run passed
        raise PatchError(f"patch {patch.file} failed: {_failure(done.stdout + done.stderr)}")


def hunk_text(patch_path: Path, file: str, number: int) -> str:
    """Hunk `number` (1-based, counted per file as GNU patch counts) of `file` in a unified diff
    applied with -p1; empty when the diff has no such hunk."""
    lines = patch_path.read_text(encoding="utf-8", errors="replace").splitlines()
    index, current, count = 0, "", 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("+++ "):
            target = line[4:].split("\t")[0].strip()
            current, count = target.split("/", 1)[1] if "/" in target else target, 0
        elif (match := _HUNK_RE.match(line)) and current:
            count += 1
            old = int(match[1]) if match[1] is not None else 1
            new = int(match[2]) if match[2] is not None else 1
            end = _hunk_end(lines, index + 1, old, new)
            if current == file and count == number:
                return "\n".join(lines[index:end])
            index = end
            continue
        index += 1
    return ""


def _hunk_end(lines: list[str], start: int, old: int, new: int) -> int:
    """Index after a hunk's body: its lines counted against the @@ header's old and new lengths."""
    index = start
    while index < len(lines) and (old > 0 or new > 0):
        mark = lines[index][:1]
        if mark in (" ", ""):
            old, new = old - 1, new - 1
        elif mark == "-":
            old -= 1
        elif mark == "+":
            new -= 1
        index += 1
    while index < len(lines) and lines[index].startswith("\\"):  # "\ No newline at end of file"
        index += 1
    return index
