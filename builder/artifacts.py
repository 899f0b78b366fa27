"""Libraries installed into a directory instead of site-packages (ChatGLM's kernels beside the
model's quantization.py), taken out of the cached wheel that carries them.

All or nothing: every library is first written to a temporary file in the directory, the files
it replaces are copied to `.builder/<recipe>.backup/`, then each is renamed into place; a failure
on the way puts the old files back. `.builder/<recipe>.json`, written last, is the manifest:
what was installed (with sha256) and what was replaced, so `builder uninstall` restores the
directory byte for byte. Installing again first undoes the previous install.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from builder.cache import write_text_atomic
from builder.errors import InstallError
from builder.source import sha256_of

STATE_DIR = ".builder"


def manifest_path(dest: Path, recipe: str) -> Path:
    return dest / STATE_DIR / f"{recipe}.json"


def backup_dir(dest: Path, recipe: str) -> Path:
    return dest / STATE_DIR / f"{recipe}.backup"


def libraries_in(wheel: Path, package: str) -> dict[str, bytes]:
    """The files of `package` in the wheel that are not Python (the built libraries)."""
    with zipfile.ZipFile(wheel) as archive:
        return {Path(n).name: archive.read(n) for n in archive.namelist()
                if n.startswith(f"{package}/") and not n.endswith(".py") and not n.endswith("/")}


def check_writable(dest: Path) -> None:
    if not dest.is_dir():
        raise InstallError(f"the install directory {dest} does not exist")
    if not os.access(dest, os.W_OK | os.X_OK):
        raise InstallError(f"the install directory {dest} is not writable", hint="choose another with --install-dir")


def install_artifacts(wheel: Path, package: str, dest: Path, *, recipe: str, key: str) -> dict[str, Any]:
    """Copy the wheel's libraries into `dest`; returns the manifest."""
    check_writable(dest)
    libraries = libraries_in(wheel, package)
    if not libraries:
        raise InstallError(f"{wheel.name} holds no libraries under {package}/")
    if manifest_path(dest, recipe).is_file():
        uninstall_artifacts(dest, recipe)
    staged = {name: _stage(dest, name, data) for name, data in libraries.items()}
    replaced: list[str] = []
    placed: list[str] = []
    try:
        backups = backup_dir(dest, recipe)
        backups.mkdir(parents=True, exist_ok=True)
        for name in libraries:
            if (dest / name).exists():
                shutil.copy2(dest / name, backups / name)
                replaced.append(name)
        for name, temp in staged.items():
            os.replace(temp, dest / name)
            placed.append(name)
        manifest = {"recipe": recipe, "cache_key": key, "wheel": wheel.name,
                    "files": [{"name": n, "sha256": sha256_of(dest / n), "replaced": n in replaced}
                              for n in sorted(libraries)]}
        write_text_atomic(manifest_path(dest, recipe), json.dumps(manifest, indent=2))
    except OSError as exc:
        _roll_back(dest, recipe, placed, replaced)
        raise InstallError(f"cannot install into {dest}: {exc.strerror or exc}; nothing was changed") from exc
    finally:
        for temp in staged.values():
            temp.unlink(missing_ok=True)
    return manifest


def _stage(dest: Path, name: str, data: bytes) -> Path:
    temp = dest / f".{name}.builder-tmp"
    try:
        temp.write_bytes(data)
        temp.chmod(0o755)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise InstallError(f"cannot write into {dest}: {exc.strerror or exc}; nothing was changed") from exc
    return temp


def _roll_back(dest: Path, recipe: str, placed: list[str], replaced: list[str]) -> None:
    backups = backup_dir(dest, recipe)
    for name in placed:
        if name in replaced:
            os.replace(backups / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)
    shutil.rmtree(backups, ignore_errors=True)


def uninstall_artifacts(dest: Path, recipe: str) -> list[str]:
    """Undo an install: put back what it replaced, remove what it added. Returns the names."""
    path = manifest_path(dest, recipe)
    if not path.is_file():
        raise InstallError(f"no {recipe} installed by builder in {dest} (no {path.relative_to(dest)})")
    check_writable(dest)
    manifest = json.loads(path.read_text())
    backups = backup_dir(dest, recipe)
    names = []
    for record in manifest["files"]:
        name = record["name"]
        if record["replaced"]:
            os.replace(backups / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)
        names.append(name)
    path.unlink()
    shutil.rmtree(backups, ignore_errors=True)
    state = dest / STATE_DIR
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()
    return names
