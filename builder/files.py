"""Files written whole or not at all, and the hashes that name their content.

Every file builder publishes (a cache entry's metadata, a re-tagged wheel, a downloaded archive,
an index page) is written to a temporary file beside its target and renamed into place, so a
reader never sees half a file and a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from builder.errors import FileAccessError, SourceError


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file at `path`."""
    try:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise FileAccessError(f"cannot read {path}: {e.strerror or e}") from e


def tree_sha256(root: Path, only: Sequence[str] = ()) -> str:
    """A hash over a directory's relative paths and contents (a source given as a folder); with
    `only`, over those files alone (a model directory whose other files change)."""
    missing = [name for name in only if not (root / name).is_file()]
    if missing:
        raise SourceError(f"{root} has no {', '.join(missing)}", hint="is it the right --source directory?")
    digest = hashlib.sha256()
    files = [root / name for name in only] if only else \
        [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_of(path).encode())
    return digest.hexdigest()


@contextmanager
def atomic_writer(target: Path, *, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """A binary file beside `target` that replaces it once the block ends without an error;
    on any failure (a full disk, Ctrl-C) the temporary file is removed and `target` is untouched."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as e:
        raise FileAccessError(f"cannot write into {target.parent}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`text` (UTF-8) as the whole content of `path`, replaced in one rename."""
    try:
        with atomic_writer(path) as handle:
            handle.write(text.encode("utf-8"))
    except OSError as e:
        raise FileAccessError(f"cannot write {path}: {e.strerror or e}") from e
