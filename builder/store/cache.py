"""The local wheel cache: content-addressed entries, atomic writes, a lock per key.

Layout under the cache root:
  entries/<key>/         one finished build: the wheel, its METADATA as <wheel>.metadata (PEP 658),
                         its variant wheel (builder/store/variants.py) with that wheel's own
                         <variant wheel>.metadata, and entry.json (written to a temp dir, then
                         renamed, so a build killed midway leaves no entry)
  wheels/<file>.whl      a hard link to the newest entry with that file name (pip --find-links)
  simple/<project>/      a PEP 503 index over the entries (pip --index-url file://.../simple)
  env/<...>/simple/      an index per environment: only the builds that load there
                         (builder/store/environments.py; `builder index-url` prints one)
  variants/<...>/simple/ the variant wheels (PEP 825) of the builds against one torch, for uv
                         (builder/store/variants.py; `builder index-url --variants`)
  index.json             every entry's key, wheel and sha256 (how a shared store is listed)
  sources/ logs/ envs/ build/
  locks/<key>.lock       held while a key is looked up, built and stored; <key>.owner.json says by whom

A cache this process cannot write (a read-only mount of a team's cache) still serves its hits: a
hit reads no lock and writes nothing there, and its install log goes to the user's own log
directory instead (`Cache.log_file`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock, Timeout

from builder import wheelfile
from builder.errors import BuildError, CacheError, FileAccessError
from builder.files import sha256_of, write_text_atomic
from builder.owner import Owner, read_owner, wait_reporting, write_owner
from builder.settings import APP
from builder.store import index, variants


@dataclass(frozen=True)
class Entry:
    """One stored build."""

    key: str
    path: Path
    meta: Mapping[str, Any]

    @property
    def wheel(self) -> Path:
        return self.path / str(self.meta["wheel"])

    @property
    def sha256(self) -> str:
        return str(self.meta["sha256"])


@dataclass(frozen=True)
class CorruptEntry:
    """An entry folder whose entry.json cannot be read as an entry: skipped by list and gc,
    quarantined by verify."""

    key: str
    path: Path
    reason: str


def read_entry_meta(meta_file: Path) -> dict[str, Any]:
    """entry.json as a dict naming its wheel and sha256; CacheError saying what is wrong else."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CacheError(f"cache entry {meta_file.parent.name} is corrupt: {meta_file.name} is unreadable ({exc})",
                         hint="`builder cache verify` quarantines it") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) and meta[k] for k in ("wheel", "sha256")):
        raise CacheError(f"cache entry {meta_file.parent.name} is corrupt: {meta_file.name} names no wheel "
                         "and sha256", hint="`builder cache verify` quarantines it")
    return meta


def check_cache_root(root: Path) -> None:
    """Refuse a cache root that is, or lies under, something other than a directory."""
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == root else f"lies under {path}, which is a file"
                raise FileAccessError(f"the cache directory {root} {where}, not a directory",
                                      hint="point --cache (or BUILDER_CACHE_DIR, cache-dir in the config file) "
                                           "at a directory")
            return


def match_key(keys: list[str], prefix: str, where: str) -> str:
    """The one key of `keys` that starts with `prefix` (a whole key or a unique beginning)."""
    matches = [key for key in keys if key.startswith(prefix)]
    if len(matches) != 1:
        raise CacheError(f"{len(matches) or 'no'} cache entries in {where} match {prefix!r}",
                         hint="`builder cache list` shows the keys")
    return matches[0]


def acquired(lock: FileLock, timeout: float) -> bool:
    """Whether `lock` was taken within `timeout` seconds."""
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    return True


def core_metadata(wheel: Path) -> bytes | None:
    """The wheel's METADATA, byte for byte (what PEP 658 serves); None for a file that is no wheel."""
    try:
        return wheelfile.read_member(wheel, "METADATA")
    except BuildError:
        return None


def store_core_metadata(wheel: Path) -> dict[str, Any]:
    """Write the wheel's METADATA beside it as <wheel>.metadata (PEP 658); what the entry records
    of it (index.core_metadata_fields), or {} for a file that is no wheel."""
    metadata = core_metadata(wheel)
    if metadata is None:
        return {}
    wheel.with_name(f"{wheel.name}{index.METADATA_SUFFIX}").write_bytes(metadata)
    return index.core_metadata_fields(metadata)


class Cache:
    def __init__(self, root: Path) -> None:
        check_cache_root(root)
        self.root = root

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, name: str) -> Path:
        """Where the cache keeps `name`, not made: for what only reads it, or makes it when it
        writes there (a read-only cache has no folders to spare)."""
        return self.root / name

    def writable(self) -> bool:
        """Whether this process can write the cache (False on a read-only mount, in another user's
        directory): the folder its locks go into, or the nearest one that exists."""
        for path in (self.root / "locks", self.root, *self.root.parents):
            if path.exists():
                return os.access(path, os.W_OK)
        return False

    def log_file(self, name: str, say: Callable[[str], None] | None = None) -> Path:
        """Where a log named `name` goes: the cache's logs/, or for a cache this process cannot
        write (a read-only shared cache serving a hit) the user's own log directory (platformdirs:
        $XDG_STATE_HOME/builder/log), else a new temporary folder; `say` is told where."""
        if self.writable():
            return self.dir("logs") / name
        folder = Path(platformdirs.user_log_dir(APP))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(folder)
        except OSError:
            folder = Path(tempfile.mkdtemp(prefix=f"{APP}-logs-"))
        if say is not None:
            say(f"    the cache {self.root} is read-only here: the {name.removesuffix('.log')} log goes to "
                f"{folder / name}")
        return folder / name

    def check_writable(self) -> None:
        """Refuse, in one line, a cache this process cannot write (a read-only mount, another
        user's directory, a place no folder can be made): a build must store there; a cache hit needs
        no write."""
        hint = ("point builder at a writable cache with --cache DIR or BUILDER_CACHE_DIR (a read-only cache "
                "still serves the builds it holds)")
        if not self.writable():
            raise FileAccessError(f"the cache {self.root} is read-only here, so nothing new can be built into it",
                                  hint=hint)
        try:
            self.root.mkdir(parents=True, exist_ok=True)  # where root may write but not make folders: /proc
        except OSError as exc:
            raise FileAccessError(f"cannot make the cache {self.root}: {exc.strerror or exc}", hint=hint) from exc

    @contextmanager
    def lock(self, key: str, *, say: Callable[[str], None] | None = None) -> Iterator[None]:
        """Held while one key is looked up, built and stored, so concurrent builds compile once.
        Its holder is recorded beside it (locks/<key>.owner.json); a build that has to wait says
        who holds the key and since when, and then every REPORT_EVERY seconds how long it waited."""
        locks = self.dir("locks")
        lock, holder_file = FileLock(str(locks / f"{key}.lock")), locks / f"{key}.owner.json"
        if not acquired(lock, 0):
            holder = read_owner(holder_file)
            tell = say or (lambda message: None)
            who = holder.describe() if holder is not None else "a process that did not record itself"
            tell(f"==> waiting for another build of key {key}: {who} holds {lock.lock_file}")
            wait_reporting(lambda timeout: acquired(lock, timeout), tell,
                           f"pid {holder.pid}" if holder is not None else "the lock")
        try:
            write_owner(holder_file, Owner.me())
            yield
        finally:
            holder_file.unlink(missing_ok=True)
            lock.release()

    def get(self, key: str) -> Entry | None:
        """The finished entry of `key`, None when there is none; CacheError when it is corrupt."""
        path = self.root / "entries" / key
        meta_file = path / "entry.json"
        if not meta_file.is_file():
            return None
        return Entry(key, path, read_entry_meta(meta_file))

    def scan(self) -> tuple[list[Entry], list[CorruptEntry]]:
        """Every finished entry, oldest first, and every corrupt one (a folder still being
        written, without entry.json, is neither)."""
        root = self.root / "entries"
        found: list[Entry] = []
        corrupt: list[CorruptEntry] = []
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                entry = self.get(path.name)
            except CacheError as exc:
                corrupt.append(CorruptEntry(path.name, path, exc.message.split(": ", 1)[-1]))
                continue
            if entry is not None:
                found.append(entry)
        return sorted(found, key=lambda e: str(e.meta.get("created", ""))), corrupt

    def entries(self) -> list[Entry]:
        return self.scan()[0]

    def find(self, key_or_prefix: str) -> Entry:
        """An entry by its key or a unique key prefix; a corrupt entry it names is refused with
        what is wrong with it (CacheError), not passed over as absent."""
        entries, corrupt = self.scan()
        key = match_key([e.key for e in entries] + [c.key for c in corrupt], key_or_prefix, str(self.root))
        entry = self.get(key)
        assert entry is not None
        return entry

    def entry_of(self, wheel: Path) -> Entry | None:
        """The entry a wheel file is stored in, when it is one of this cache's."""
        folder = wheel.resolve().parent
        return self.get(folder.name) if folder.parent == (self.root / "entries").resolve() else None

    def store(self, key: str, wheel: Path, meta: Mapping[str, Any]) -> Entry:
        """Store a finished wheel under `key`, atomically; returns the new entry."""
        entries = self.dir("entries")
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=entries))
        try:
            stored = staging / wheel.name
            shutil.copy2(wheel, stored)
            variant = variants.variant_record(stored, meta, staging)
            if variant:  # the variant wheel's METADATA differs from the plain wheel's: its own file
                variant = {**variant, **store_core_metadata(staging / variant["wheel"])}
            record = {**meta, "key": key, "wheel": wheel.name, "sha256": sha256_of(stored),
                      "size": stored.stat().st_size, **store_core_metadata(stored),
                      **({"variant": variant} if variant else {}),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (staging / "entry.json").write_text(json.dumps(record, indent=2, sort_keys=True))
            final = entries / key
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        entry = Entry(key, final, record)
        self._publish(entry)
        return entry

    def remove(self, entry: Entry, *, move_to: Path | None = None) -> None:
        """Drop an entry (or move it to `move_to`, e.g. quarantine), its wheels/ link and index page."""
        link = self.root / "wheels" / entry.wheel.name
        if link.exists() and entry.wheel.exists() and link.samefile(entry.wheel):
            link.unlink()
        if move_to is None:
            shutil.rmtree(entry.path)
        else:
            move_to.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry.path, move_to)
        self.write_index()

    def record_install(self, python: Path, entry: Entry) -> None:
        """Remember that `python` has this entry installed, so gc keeps it; a cache this process
        cannot write is left as it is (its gc is not this user's either)."""
        if not self.writable():
            return
        path = self.root / "installs.json"
        with FileLock(str(self.dir("locks") / "installs.lock")):
            installs = json.loads(path.read_text()) if path.is_file() else {}
            installs.setdefault(str(python), {})[str(entry.meta.get("recipe", entry.key))] = entry.key
            write_text_atomic(path, json.dumps(installs, indent=2, sort_keys=True))

    def installed_keys(self) -> set[str]:
        path = self.root / "installs.json"
        installs = json.loads(path.read_text()) if path.is_file() else {}
        return {key for by_recipe in installs.values() for key in by_recipe.values()}

    def verified_wheel(self, entry: Entry) -> Path:
        """The entry's wheel after its sha256 matched what was stored; refuses a corrupt one."""
        actual = sha256_of(entry.wheel) if entry.wheel.is_file() else "missing"
        if actual != entry.sha256:
            raise CacheError(f"cache entry {entry.key} is corrupt: {entry.wheel.name} has "
                             f"sha256 {actual}, stored {entry.sha256}",
                             hint=f"remove it with `builder cache rm {entry.key}` and build again")
        return entry.wheel

    def _publish(self, entry: Entry) -> None:
        """Link the wheel into wheels/ and rewrite the PEP 503 tree."""
        wheels = self.dir("wheels")
        tmp = wheels / f".{entry.wheel.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.link(entry.wheel, tmp)
        os.replace(tmp, wheels / entry.wheel.name)
        self.write_index()

    def write_index(self) -> None:
        """index.json and the pages of simple/ and env/, under one lock so concurrent writers (a
        shared directory) never interleave their rewrites; a page is replaced atomically, and only
        when it changed (a store rewrites the many environment pages it rarely changes)."""
        with FileLock(str(self.dir("locks") / "index.lock")):
            metas = [e.meta for e in self.entries()]
            pages = index.published_pages(metas)
            for relative, text in pages.items():
                path = self.root / relative
                if not path.is_file() or path.read_text() != text:
                    write_text_atomic(path, text)
            for tree in ("simple", "env", "variants"):
                self._remove_stale(self.root / tree, pages)
            write_text_atomic(self.root / "index.json", index.entries_json(metas))

    def _remove_stale(self, tree: Path, pages: Mapping[str, str]) -> None:
        """Pages under `tree` that `pages` no longer has, and the folders that leaves empty."""
        if not tree.is_dir():
            return
        for page in [*tree.rglob("index.html"), *tree.rglob(f"*{variants.VARIANTS_SUFFIX}")]:
            if page.relative_to(self.root).as_posix() not in pages:
                page.unlink()
        for folder in sorted((p for p in tree.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
