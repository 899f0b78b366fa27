"""Libraries installed into a directory instead of site-packages (ChatGLM's kernels beside the
model's quantization.py, bitsandbytes' libbitsandbytes_cuda*.so into the bitsandbytes already
installed in the target), taken out of the cached wheel that carries them.

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

from packaging.version import InvalidVersion, Version

from builder.errors import InstallError
from builder.files import sha256_of, write_text_atomic
from builder.process import capture

STATE_DIR = ".builder"

# find_spec on a top-level name reads the import path without running the package: the import
# itself is what fails when its library is missing.
_LOCATE = """
import importlib.metadata, importlib.util, json, sys
spec = importlib.util.find_spec(sys.argv[1])
try:
    version = importlib.metadata.version(sys.argv[1])
except importlib.metadata.PackageNotFoundError:
    version = None
folders = list(spec.submodule_search_locations or []) if spec else []
print(json.dumps({"folder": folders[0] if folders else None, "version": version}))
"""


def manifest_path(dest: Path, recipe: str) -> Path:
    return dest / STATE_DIR / f"{recipe}.json"


def backup_dir(dest: Path, recipe: str) -> Path:
    return dest / STATE_DIR / f"{recipe}.backup"


def locate_package(python: Path, package: str) -> tuple[Path | None, str | None]:
    """(folder, installed version) of an import package in `python`, found without importing it."""
    result = capture([python, "-c", _LOCATE, package])
    if result.returncode != 0:
        raise InstallError(f"cannot look for {package} in {python}: "
                           f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    found = json.loads(result.stdout)
    return (Path(found["folder"]) if found["folder"] else None), found["version"]


def package_folder(python: Path, package: str) -> Path:
    """The folder of an import package installed in `python`, which must have it."""
    folder, _ = locate_package(python, package)
    if folder is None:
        raise InstallError(f"{python} has no {package} installed")
    return folder


def installed_package_dir(python: Path, package: str, built_version: str) -> Path:
    """The folder of the `package` installed in `python`, which must be the built release series
    (its Python code calls the library's C functions: another series has other ones)."""
    folder, version = locate_package(python, package)
    if folder is None:
        raise InstallError(f"{python} has no {package} installed to put the libraries into",
                           hint="install it first, or use --install-mode wheel for a complete package")
    if version is not None and _series(version) != _series(built_version):
        raise InstallError(f"{python} has {package} {version}, but these libraries are {package} {built_version}",
                           hint=f"build --version {version} for it, or use --install-mode wheel")
    return folder


def _series(version: str) -> tuple[int, ...]:
    try:
        return Version(version).release[:2]
    except InvalidVersion:
        return ()


def libraries_in(wheel: Path, members: list[str]) -> dict[str, bytes]:
    """The wheel's files at `members` (paths inside it), by file name."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        missing = [m for m in members if m not in names]
        if missing:
            raise InstallError(f"{wheel.name} holds no {', '.join(missing)}")
        return {Path(m).name: archive.read(m) for m in members}


def check_writable(dest: Path) -> None:
    if not dest.is_dir():
        raise InstallError(f"the install directory {dest} does not exist")
    if not os.access(dest, os.W_OK | os.X_OK):
        raise InstallError(f"{dest} is not writable; nothing was changed",
                           hint="run as its owner, or choose another place (--install-dir, --python)")


def install_artifacts(wheel: Path, members: list[str], dest: Path, *, recipe: str, key: str) -> dict[str, Any]:
    """Copy the wheel's libraries at `members` into `dest`; returns the manifest."""
    check_writable(dest)
    libraries = libraries_in(wheel, members)
    if not libraries:
        raise InstallError(f"{wheel.name}: the recipe names no libraries to install")
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
