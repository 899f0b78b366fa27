"""Keeping a cache healthy: `builder cache gc` (prune) and `builder cache verify` (re-hash).

gc keeps the newest N entries per recipe and/or fits a size cap, oldest first out, and never
removes an entry that an install recorded in installs.json still uses; an entry whose entry.json
is unreadable is skipped and reported. With --build-folders it also removes what failed and killed
builds left in the build root (builder/building/workdir.py `left_folders`). verify re-hashes
every wheel against its entry.json and moves a corrupt entry (a wrong hash, a missing wheel, an
unreadable entry.json) to quarantine/, out of every index.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.building.workdir import folder_size, left_folders
from builder.errors import UsageError
from builder.files import sha256_of
from builder.store.cache import Cache, CorruptEntry, Entry


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept_installed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    size_after: int = 0
    skipped_corrupt: dict[str, str] = field(default_factory=dict)
    """Entries whose entry.json is unreadable, with why: left for `cache verify` to quarantine."""
    build_folders: list[str] = field(default_factory=list)
    """Folders of the build root that builds left, removed (or, in a dry run, to be)."""
    build_folders_bytes: int = 0
    build_folders_kept: list[str] = field(default_factory=list)
    """Such folders that could not be removed (another user's, in a shared build root)."""


def _size(entry: Entry) -> int:
    return sum(p.stat().st_size for p in entry.path.iterdir() if p.is_file())


def gc(cache: Cache, *, keep: int | None = None, max_bytes: int | None = None, dry_run: bool = False,
       build_root: Path | None = None) -> GcReport:
    """Remove entries beyond the newest `keep` per recipe, then oldest first until under `max_bytes`;
    and the folders builds left in `build_root`, when given."""
    if keep is None and max_bytes is None and build_root is None:
        raise UsageError("cache gc needs --keep N, --max-size SIZE and/or --build-folders")
    if keep is not None and keep < 0:
        raise UsageError("--keep must be 0 or more")
    entries, corrupt = cache.scan()  # oldest first
    protected = cache.installed_keys()
    doomed: list[Entry] = []
    if keep is not None:
        by_recipe: dict[str, list[Entry]] = {}
        for entry in entries:
            by_recipe.setdefault(str(entry.meta.get("recipe")), []).append(entry)
        for group in by_recipe.values():
            doomed += group[: max(0, len(group) - keep)]
    if max_bytes is not None:
        total = sum(_size(e) for e in entries if e not in doomed)
        for entry in entries:
            if total <= max_bytes:
                break
            if entry not in doomed and entry.key not in protected:
                doomed.append(entry)
                total -= _size(entry)
    report = GcReport(skipped_corrupt={c.key: c.reason for c in corrupt})
    for entry in doomed:
        if entry.key in protected:
            report.kept_installed.append(entry.key)
            continue
        report.freed_bytes += _size(entry)
        report.removed.append(entry.key)
        if not dry_run:
            cache.remove(entry)
    report.size_after = sum(_size(e) for e in cache.entries())
    for folder in left_folders(build_root) if build_root is not None else []:
        size = folder_size(folder)
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                report.build_folders_kept.append(str(folder))
                continue
        report.build_folders.append(str(folder))
        report.build_folders_bytes += size
    return report


def verify(cache: Cache) -> dict[str, list[str]]:
    """Re-hash every stored wheel; quarantine the corrupt, and the entries whose entry.json is
    unreadable. Returns {"ok": [...], "quarantined": [...]}."""
    report: dict[str, list[str]] = {"ok": [], "quarantined": []}
    entries, corrupt = cache.scan()
    for entry in entries:
        actual = sha256_of(entry.wheel) if entry.wheel.is_file() else "missing"
        if actual == entry.sha256:
            report["ok"].append(entry.key)
            continue
        cache.remove(entry, move_to=_quarantine(cache, entry.key))
        report["quarantined"].append(entry.key)
    for bad in corrupt:
        _quarantine_unreadable(cache, bad)
        report["quarantined"].append(bad.key)
    return report


def _quarantine(cache: Cache, key: str) -> Path:
    return cache.root / "quarantine" / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}"


def _quarantine_unreadable(cache: Cache, bad: CorruptEntry) -> None:
    """Move an entry whose entry.json cannot be read out of entries/ (and so out of every index)."""
    for wheel in bad.path.glob("*.whl"):
        link = cache.root / "wheels" / wheel.name
        if link.exists() and link.samefile(wheel):
            link.unlink()
    target = _quarantine(cache, bad.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(bad.path, target)
    cache.write_index()


def parse_size(text: str) -> int:
    """"500M", "2G", "1.5T", "1048576" -> bytes."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    number, unit = text.strip().upper().rstrip("B"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        return int(float(number) * units[unit])
    except ValueError:
        raise UsageError(f"malformed size {text!r}", hint="write it like 500M, 20G or 1.5T") from None
