"""The data builder ships: recipes (with their check scripts and helper projects) and patches.

In an installed builder they are the package data `builder.recipes` and `builder.patches`
(pyproject.toml maps the project's top-level recipes/ and patches/ folders to those packages), read
through importlib.resources. Run uninstalled from a source checkout (`PYTHONPATH=. python -m
builder`), those packages do not exist and the checkout's own folders are used.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from builder.errors import FileAccessError

SHIPPED = ("recipes", "patches")


def shipped_dir(kind: str) -> Path:
    """The folder of shipped `recipes` or `patches`, on disk."""
    if kind not in SHIPPED:
        raise ValueError(kind)
    try:
        folder = Path(str(importlib.resources.files(f"builder.{kind}")))
    except ModuleNotFoundError:  # a source checkout run without installing it
        folder = Path(__file__).resolve().parent.parent / kind
    if not folder.is_dir():
        raise FileAccessError(f"builder's shipped {kind} are missing (looked in {folder})",
                              hint="reinstall builder; a zipped install is not supported")
    return folder
