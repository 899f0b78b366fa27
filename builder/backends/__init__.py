"""Build styles. A backend turns a patched source tree into a wheel; the pipeline does the rest.

Adding a build style is one new module here and one line in BACKENDS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from builder.errors import RecipeError
from builder.plan import Plan


class Backend(Protocol):
    """What differs between build styles: the commands that make a wheel."""

    name: str

    def commands(self, plan: Plan, source_dir: Path, out_dir: Path) -> list[list[str]]:
        """The commands the build runs, in order (shown by `builder plan`)."""
        ...

    def build(self, plan: Plan, source_dir: Path, out_dir: Path, env: Mapping[str, str],
              log_path: Path, on_line: Callable[[str], None]) -> Path:
        """Run the build and return the wheel it wrote into out_dir."""
        ...


def get_backend(name: str) -> Backend:
    from builder.backends.cc import CBackend
    from builder.backends.cmake import CMakeBackend
    from builder.backends.make import MakeBackend
    from builder.backends.scikit_build import ScikitBuild
    from builder.backends.torch_ext import TorchExtension

    backends: dict[str, Backend] = {"torch-ext": TorchExtension(), "cc": CBackend(), "scikit-build": ScikitBuild(),
                                    "make": MakeBackend(), "cmake": CMakeBackend()}
    if name not in backends:
        raise RecipeError(f"unknown backend {name!r}; known: {', '.join(sorted(backends))}")
    return backends[name]
