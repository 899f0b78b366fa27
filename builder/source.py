"""Get a recipe's source onto disk, checked: fetch a sha256-verified archive, extract it safely.

`fetch` resolves a file through the PEP 691 JSON simple API (or a URL, or a local path), keeps it
only once its sha256 matches, and reuses a stored archive offline. `extract` refuses any member
that would land outside the destination.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urljoin, urlparse

from builder.errors import SourceError

TIMEOUT_S = 60.0  # seconds a connect or read may stall before a fetch fails

_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar")


@dataclass(frozen=True)
class SourceSpec:
    """Where a recipe's source comes from: exactly one of pypi/url/path/local is set."""

    pypi: str | None = None  # PyPI project name, e.g. "flash-attn"; with `file`
    file: str | None = None  # file name on the index (with a url: the stored name)
    url: str | None = None  # a direct URL to an archive
    path: str | None = None  # a local archive or directory
    sha256: str | None = None  # required for pypi/url; for a local archive checked when given
    local: str | None = None  # no download: what the user must pass with --source


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file at `path`."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from e


def fetch(
    spec: SourceSpec,
    sources_dir: Path,
    *,
    index_url: str = "https://pypi.org/simple",
    offline: bool = False,
) -> Path:
    """Path of the verified archive (or local directory) for `spec`, downloading it if missing."""
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
    url = spec.url or _resolve_pypi(spec.pypi or "", name, index_url, expected)
    sources_dir.mkdir(parents=True, exist_ok=True)
    _download(url, target, expected)
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
    """URL of `file` in `project` on a PEP 691 index; refuses a hash the index contradicts."""
    page = f"{index_url.rstrip('/')}/{re.sub(r'[-_.]+', '-', project).lower()}/"
    if urlparse(page).scheme == "file":
        return _resolve_file_index(page, file)
    with _open(page, accept=_SIMPLE_JSON) as response:
        try:
            data = json.load(response)
        except (ValueError, OSError, HTTPException) as e:
            raise SourceError(f"{page} did not answer with PEP 691 JSON: {e}") from e
    url, listed = _find_file(data, file, page)
    if listed is not None and listed.lower() != expected:
        raise SourceError(
            f"{page} lists sha256 {listed} for {file}, but the recipe expects {expected}"
        )
    return url


def _find_file(data: Any, file: str, page: str) -> tuple[str, str | None]:
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        raise SourceError(f"{page} is not a PEP 691 project page (no `files` list)")
    for entry in files:
        if isinstance(entry, dict) and entry.get("filename") == file and entry.get("url"):
            hashes = entry.get("hashes")
            listed = hashes.get("sha256") if isinstance(hashes, dict) else None
            return urljoin(page, str(entry["url"])), None if listed is None else str(listed)
    raise SourceError(f"{page} has no file {file} ({len(files)} files listed)")


def _resolve_file_index(page: str, file: str) -> str:
    """A file:// index is a directory of <normalized-project>/<file>, as pip reads one."""
    candidate = Path(urllib.request.url2pathname(urlparse(page).path)) / file
    if not candidate.is_file():
        raise SourceError(f"no file {candidate} in the local index {page}")
    return candidate.as_uri()


@contextmanager
def _open(url: str, *, accept: str = "*/*") -> Iterator[IO[bytes]]:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "builder"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            yield response
    except urllib.error.HTTPError as e:
        raise SourceError(f"GET {url} failed: HTTP {e.code} {e.reason}") from e
    except (OSError, HTTPException, ValueError) as e:  # URLError is an OSError
        raise SourceError(f"cannot fetch {url}: {getattr(e, 'reason', e)}") from e


def _download(url: str, target: Path, expected: str) -> None:
    """Stream `url` to a temp file beside `target`; move it into place only if its hash matches."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, _open(url) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if (actual := digest.hexdigest()) != expected:
            raise SourceError(f"sha256 mismatch for {url}: expected {expected}, got {actual}")
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


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


def tree_sha256(root: Path, only: Sequence[str] = ()) -> str:
    """A hash over a directory's relative paths and contents, for sources given as a folder;
    with `only`, over those files alone (a model directory whose other files change)."""
    missing = [name for name in only if not (root / name).is_file()]
    if missing:
        raise SourceError(f"{root} has no {', '.join(missing)}", hint="is it the right --source directory?")
    digest = hashlib.sha256()
    files = [root / name for name in only] if only else \
        [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_of(path).encode())
    return digest.hexdigest()


def source_identity(spec: SourceSpec, only: Sequence[str] = ()) -> str:
    """What names a source's content: its sha256, or for a local folder the hash of its tree
    (of the files in `only`, when given)."""
    if spec.sha256:
        return spec.sha256
    if spec.path is None:
        raise SourceError("a downloaded source needs sha256")
    path = Path(spec.path)
    return tree_sha256(path, only) if path.is_dir() else sha256_of(path)
