"""The small executables builder puts in front of a build's tools (the compile gate, the ordering
ninja, sccache in front of the host compiler): a shell script that runs a fixed command with the
arguments it was given, for the variables and build files that take one program's path (CXX,
PYTORCH_NVCC's first word, CMake's launchers, a `ninja` first on PATH)."""

from __future__ import annotations

import shlex
from pathlib import Path


def launcher_script(path: Path, command: list[str]) -> str:
    """Write `path` as an executable that runs `command` followed by its own arguments; its path."""
    path.write_text(f"#!/bin/sh\nexec {shlex.join(command)} \"$@\"\n")
    path.chmod(0o755)
    return str(path)
