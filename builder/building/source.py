"""Get a recipe's source onto disk, checked: fetch a sha256-verified archive, extract it safely.

`fetch` resolves a file on the configured package index (PEP 691 JSON or PEP 503 HTML: PyPI or a
mirror of it), or takes a URL (through the url-mirrors rewrites) or a local path; it keeps a
download only once its sha256 matches the recipe's, whoever served it, and reuses a stored archive
offline. `extract` refuses any member
that would land outside the destination.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from builder.errors import SourceError
from builder.files import atomic_writer, sha256_of
from builder.index_client import PYPI_SIMPLE, open_url, project_files, project_page
from builder.planning.source_spec import SourceSpec

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")


def fetch(
    spec: SourceSpec,
    sources_dir: Path,
    *,
    index_url: str = PYPI_SIMPLE,
    mirrored: Callable[[str], str] = str,
    offline: bool = False,
) -> Path:
    """Path of the verified archive (or local directory) for `spec`, downloading it if missing: a
    PyPI file from `index_url`, a URL through `mirrored` (the url-mirrors setting)."""
    _check_spec(spec)
    if spec.local is not None:
        raise SourceError(f"this source has no download: pass --source with {spec.local}")
    if spec.path is not None:
        return _local_source(Path(spec.path).expanduser(), spec.sha256)
    assert spec.sha256 is not None  # _check_spec guarantees it for pypi and url
    expected = spec.sha256.lower()
    name = _stored_name(spec)
    target = sources_dir / name
    if target.is_file():
        _verify(target, expected, f"delete {target} and fetch it again")
        return target
    if offline:
        raise SourceError(
            f"{name} is not in {sources_dir} and builder is offline: "
            "run `builder fetch <recipe>` first or pass --source PATH"
        )
    if spec.url:
        url = mirrored(spec.url)
        served_by = f"the url-mirrors setting sent {spec.url} to {url}" if url != spec.url else None
    else:
        url = _resolve_pypi(spec.pypi or "", name, index_url, expected)
        served_by = f"the index {index_url} served it" if index_url.rstrip("/") != PYPI_SIMPLE else None
    sources_dir.mkdir(parents=True, exist_ok=True)
    _download(url, target, expected, served_by)
    return target


def _check_spec(spec: SourceSpec) -> None:
    given = [k for k in ("pypi", "url", "path", "local") if getattr(spec, k) is not None]
    if len(given) != 1:
        raise SourceError(f"a source needs exactly one of pypi, url, path, local (got {given or 'none'})")
    if spec.local is not None:
        return
    if spec.pypi is not None and not spec.file:
        raise SourceError(f"pypi source {spec.pypi!r} needs a `file` (the file name on the index)")
    if spec.path is None and spec.sha256 is None:
        raise SourceError(f"source {spec.pypi or spec.url} has no sha256; one is required")
    if spec.sha256 is not None and not _SHA256.match(spec.sha256.lower()):
        raise SourceError(f"sha256 {spec.sha256!r} is not 64 hex digits")


def _local_source(path: Path, sha256: str | None) -> Path:
    if path.is_dir():
        return path
    if not path.is_file():
        raise SourceError(f"source path {path} does not exist")
    if sha256 is not None:
        _verify(path, sha256.lower())
    return path


def _verify(path: Path, expected: str, hint: str | None = None) -> None:
    actual = sha256_of(path)
    if actual != expected:
        message = f"sha256 mismatch for {path}: expected {expected}, got {actual}"
        raise SourceError(message, hint=hint)


def _stored_name(spec: SourceSpec) -> str:
    name = spec.file or PurePosixPath(unquote(urlparse(spec.url or "").path)).name
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise SourceError(f"cannot take a file name from {spec.url!r}; set `file` in the recipe")
    return name


def _resolve_pypi(project: str, file: str, index_url: str, expected: str) -> str:
    """URL of `file` in `project` on the index; refuses a hash the index contradicts."""
    files = project_files(index_url, project)
    for found in files:
        if found.filename == file:
            if found.sha256 is not None and found.sha256.lower() != expected:
                raise SourceError(f"{project_page(index_url, project)} lists sha256 {found.sha256} for {file}, "
                                  f"but the recipe expects {expected}")
            return found.url
    raise SourceError(f"{project_page(index_url, project)} has no file {file} ({len(files)} files listed)",
                      hint="is the index a full mirror? BUILDER_INDEX_URL or pip's index-url sets it")


def download(url: str, target: Path, expected: str | None) -> str:
    """Stream `url` into place beside `target` and return its sha256; with `expected`, it replaces
    `target` only if the hash matches. A release no recipe pins yet has only the index's hash, or
    none (then the hash is the download's, for the recipe to record)."""
    if expected is not None and target.is_file() and sha256_of(target) == expected.lower():
        return expected.lower()
    _download(url, target, expected.lower() if expected is not None else None)
    return sha256_of(target)


def _download(url: str, target: Path, expected: str | None, served_by: str | None = None) -> None:
    """Stream `url` into place beside `target`; it replaces `target` only if its hash matches.
    `served_by` says which mirror served it, for the hint of a mismatch."""
    with atomic_writer(target) as out, open_url(url) as response:
        digest = hashlib.sha256()
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if expected is not None and (actual := digest.hexdigest()) != expected:
            hint = f"{served_by}; the recipe's sha256 guards every download: nothing was stored" if served_by else None
            raise SourceError(f"sha256 mismatch for {url}: expected {expected}, got {actual}", hint=hint)


def extract(archive: Path, dest: Path) -> Path:
    """Unpack `archive` (or copy a source directory) into the empty or absent `dest`, safely.

    Returns the single top-level directory, or `dest` when there are several top-level entries.
    Work happens in a sibling staging directory, so a refused or broken archive leaves no `dest`.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SourceError(f"cannot extract into {dest}: it is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        _unpack(archive, staging)
        _check_tree(staging, what=str(archive))
        staging.chmod(0o755)
        os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    entries = list(dest.iterdir())
    only = entries[0] if len(entries) == 1 else None
    return only if only is not None and only.is_dir() and not only.is_symlink() else dest


def read_top_file(source: Path, name: str) -> str | None:
    """The text of file `name` at the top of a source (an archive's single top-level folder, or a
    directory), read without unpacking the rest; None when it has none."""
    if source.is_dir():
        path = source / name
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    try:
        if source.name.lower().endswith(".zip"):
            with zipfile.ZipFile(source) as zf:
                found = [n for n in zf.namelist() if _is_top_file(n, name)]
                return zf.read(found[0]).decode("utf-8", "replace") if found else None
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                if member.isreg() and _is_top_file(member.name, name):
                    handle = tar.extractfile(member)
                    return handle.read().decode("utf-8", "replace") if handle is not None else None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise SourceError(f"cannot read {source}: {e}") from e
    return None


def _is_top_file(member: str, name: str) -> bool:
    parts = PurePosixPath(member).parts
    return parts[-1:] == (name,) and len(parts) <= 2


def _unpack(archive: Path, staging: Path) -> None:
    name = archive.name.lower()
    try:
        if archive.is_dir():
            _copy_dir(archive, staging)
        elif name.endswith(".zip"):
            _unzip(archive, staging)
        elif name.endswith(_TAR_SUFFIXES):
            _untar(archive, staging)
        else:
            raise SourceError(f"{archive}: not a .tar(.gz/.bz2/.xz), .tgz or .zip archive")
    except tarfile.FilterError as e:
        member = e.tarinfo.name if e.tarinfo is not None else "?"
        raise SourceError(f"{archive}: refusing member {member!r}: {e}") from e
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise SourceError(f"cannot extract {archive}: {e}") from e


def _untar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_tar_member(member, archive)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(staging, members=members, filter="data")
        else:  # Python < 3.11.4: the checks above and _check_tree are the guard
            tar.extractall(staging, members=members)


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    def refuse(why: str) -> SourceError:
        return SourceError(f"{archive}: refusing member {member.name!r}: {why}")

    if _leaves_tree(member.name):
        raise refuse("absolute path or `..` component")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise refuse("device file, fifo or other special member")
    if member.issym() or member.islnk():  # a symlink is relative to its directory, a hardlink not
        base = posixpath.dirname(member.name) if member.issym() else ""
        if _leaves_tree(posixpath.normpath(posixpath.join(base, member.linkname))):
            raise refuse(f"link to {member.linkname!r} leaves the tree")


def _leaves_tree(name: str) -> bool:
    """Whether an archive member name is absolute or climbs with `..`."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def _unzip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if _leaves_tree(info.filename):
                why = "absolute path or `..` component"
                raise SourceError(f"{archive}: refusing member {info.filename!r}: {why}")
        zf.extractall(staging)


def _copy_dir(source: Path, staging: Path) -> None:
    if staging.resolve().is_relative_to(source.resolve()):
        raise SourceError(f"cannot copy {source} into {staging}: the destination is inside it")
    _check_tree(source, what=str(source))
    shutil.copytree(source, staging, symlinks=True, dirs_exist_ok=True)


def _check_tree(root: Path, *, what: str) -> None:
    """Refuse special files and symlinks whose real target is outside `root`."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode) and not _resolves_inside(path, real_root):
                raise SourceError(
                    f"{what}: refusing {rel!r}: symlink {os.readlink(path)!r} leaves the tree"
                )
            if not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise SourceError(f"{what}: refusing {rel!r}: device file, fifo or socket")


def _resolves_inside(link: Path, real_root: Path) -> bool:
    try:
        return link.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a symlink loop
        return False
