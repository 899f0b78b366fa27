"""Build styles. A backend turns a patched source tree into a wheel; the pipeline does the rest.

What differs between styles is said here, on the Backend protocol: the commands, the build, and
the capabilities the rest of builder asks about (whether compiles go through the compile gate,
which native libraries the wheel carries). Adding a build style is one new module here and one
line in BACKENDS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from builder.building.backends.cc import CBackend
from builder.building.backends.cmake import CMakeBackend
from builder.building.backends.make import MakeBackend
from builder.building.backends.scikit_build import ScikitBuild
from builder.building.backends.torch_ext import TorchExtension
from builder.errors import RecipeError
from builder.planning.plan import Plan


class Backend(Protocol):
    """A build style."""

    name: str
    gated: bool
    """Its compiles run through the compile gate (memory admission, per-file records): jobs are
    then one per core, and the gate keeps the memory budget."""
    gates_host_compiler: bool
    """Its host C++ compiles are gated through CXX too (torch's cpp_extension runs $CXX)."""

    def commands(self, plan: Plan, source_dir: Path, out_dir: Path) -> list[list[str]]:
        """The commands the build runs, in order (shown by `builder plan`)."""
        ...

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        """Run the build and return the wheel it wrote into out_dir."""
        ...

    def libraries(self, plan: Plan) -> list[str]:
        """The native libraries the wheel carries as paths inside it (what an artifacts install
        copies out and what verify checks); empty for a style that makes Python extensions."""
        ...


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    TorchExtension(), CBackend(), ScikitBuild(), MakeBackend(), CMakeBackend())}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise RecipeError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]
