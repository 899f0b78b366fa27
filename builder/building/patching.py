"""Applying a recipe's patches: each a unified diff, all or nothing, failures named by hunk."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from builder.errors import PatchError
from builder.planning.recipe import Patch
from builder.process import capture, require_program

_FAILED_RE = re.compile(r"Hunk #(\d+) FAILED at (\d+)")
_FILE_RE = re.compile(r"(?:patching|checking) file (\S+)")


def _failure(output: str) -> str:
    """'setup.py hunk #2 (at line 120)' from GNU patch's output, or its last line."""
    current = "?"
    for line in output.splitlines():
        if match := _FILE_RE.search(line):
            current = match[1]
        if match := _FAILED_RE.search(line):
            return f"{current} hunk #{match[1]} (at line {match[2]})"
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def apply_patches(patches: Sequence[Patch], tree: Path) -> None:
    """Apply each patch with -p1 and no fuzz; a dry run first, so a failure changes nothing."""
    patch_program = require_program("patch", hint="install GNU patch (apt-get install patch)")
    for patch in patches:
        args = [patch_program, "-p1", "--forward", "--batch", "--fuzz=0", "-i", str(patch.path)]
        dry = capture([*args, "--dry-run"], cwd=tree)
        if dry.returncode != 0:
            raise PatchError(f"patch {patch.file} does not apply: {_failure(dry.stdout + dry.stderr)}",
                             hint="the patch's `when` range may need narrowing for this version")
        done = capture(args, cwd=tree)
        if done.returncode != 0:  # pragma: no cover - the dry run passed
            raise PatchError(f"patch {patch.file} failed: {_failure(done.stdout + done.stderr)}")
