"""cache gc and cache verify on a real cache directory (entries stored through Cache.store)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import FileLock

from builder.building.workdir import OWNER_FILE
from builder.owner import Owner, write_owner
from builder.store.cache import Cache
from tests.conftest import builder_json, run_builder


def fill(root: Path, spec: list[tuple[str, str, int]]) -> Cache:
    """Store one entry per (key, recipe, size in bytes), oldest first."""
    cache = Cache(root)
    for index, (key, recipe, size) in enumerate(spec):
        wheel = root.parent / f"{recipe.replace('-', '_')}-1.0+k{index}-py3-none-any.whl"
        wheel.write_bytes(bytes([index]) * size)
        cache.store(key, wheel, {"recipe": recipe, "version": "1.0"})
        time.sleep(1.1)  # entry.json "created" has one-second resolution
    return cache


def test_gc_keeps_the_newest_per_recipe_and_what_is_installed(tmp_path: Path) -> None:
    cache = fill(tmp_path / "cache", [("a1", "alpha", 10), ("a2", "alpha", 10), ("a3", "alpha", 10),
                                      ("b1", "beta", 10)])
    cache.record_install(Path("/some/venv/bin/python"), cache.find("a1"))
    dry = builder_json("cache", "gc", "--keep", "1", "--dry-run", "--cache", str(cache.root))
    assert dry["removed"] == ["a2"] and dry["kept_installed"] == ["a1"]
    assert {e.key for e in cache.entries()} == {"a1", "a2", "a3", "b1"}
    done = builder_json("cache", "gc", "--keep", "1", "--cache", str(cache.root))
    assert done["removed"] == ["a2"]
    assert [e.key for e in cache.entries()] == ["a1", "a3", "b1"]
    assert sorted(p.name for p in (cache.root / "wheels").iterdir()) == sorted(e.wheel.name for e in cache.entries())


def test_gc_size_cap_removes_oldest_first(tmp_path: Path) -> None:
    cache = fill(tmp_path / "cache", [("old", "alpha", 4000), ("mid", "beta", 4000), ("new", "gamma", 4000)])
    report = builder_json("cache", "gc", "--max-size", "9000", "--cache", str(cache.root))
    assert report["removed"] == ["old"]
    assert report["size_after"] <= 9000 + 3 * 1024  # plus the small entry.json files


def test_gc_needs_a_rule_and_a_sane_size(tmp_path: Path) -> None:
    assert run_builder("cache", "gc", "--cache", str(tmp_path)).returncode == 2
    bad = run_builder("cache", "gc", "--max-size", "lots", "--cache", str(tmp_path))
    assert bad.returncode == 2 and "malformed size 'lots'" in bad.stderr


def test_verify_quarantines_a_flipped_byte(tmp_path: Path) -> None:
    cache = fill(tmp_path / "cache", [("good", "alpha", 100), ("bad", "beta", 100)])
    wheel = cache.find("bad").wheel
    data = bytearray(wheel.read_bytes())
    data[50] ^= 0x01
    wheel.write_bytes(bytes(data))
    result = run_builder("cache", "verify", "--json", "--cache", str(cache.root))
    assert result.returncode == 9
    assert json.loads(result.stdout) == {"ok": ["good"], "quarantined": ["bad"]}
    assert [e.key for e in cache.entries()] == ["good"]
    [quarantined] = (cache.root / "quarantine").iterdir()
    assert quarantined.name.startswith("bad-") and (quarantined / "entry.json").is_file()
    assert "beta" not in (cache.root / "simple" / "index.html").read_text()
    assert builder_json("cache", "verify", "--cache", str(cache.root)) == {"ok": ["good"], "quarantined": []}


def test_gc_removes_the_folders_builds_left_once_a_day_old_and_unused(tmp_path: Path) -> None:
    root, day_ago = tmp_path / "build", time.time() - 25 * 3600
    folders = {name: root / name for name in ("failed", "failed.stale-20261201-101010", "fresh", "locked", "owned")}
    for folder in folders.values():
        (folder / "src").mkdir(parents=True)
        (folder / "src" / "kernel.o").write_bytes(b"\0" * 1000)
    write_owner(folders["owned"] / OWNER_FILE, Owner.me())  # a build working there (or a dead one's compilers)
    for name, folder in folders.items():
        if name != "fresh":  # a failure of an hour ago stays for its inspection
            os.utime(folder, (day_ago, day_ago))
    env = {"BUILDER_BUILD_DIR": str(root)}
    cache = str(tmp_path / "cache")
    with FileLock(f"{folders['locked']}.lock"):  # a build of that key holds its folder
        dry = builder_json("cache", "gc", "--build-folders", "--dry-run", "--cache", cache, env=env)
        assert dry["build_folders"] == [str(folders["failed"]), str(folders["failed.stale-20261201-101010"])]
        assert dry["build_folders_bytes"] == 2000 and all(folder.is_dir() for folder in folders.values())
        shown = run_builder("cache", "gc", "--build-folders", "--cache", cache, env=env, check=True)
    assert f"removed 2 folder(s) builds left in {root} (0.0 MB)" in shown.stdout
    assert sorted(path.name for path in root.iterdir() if path.is_dir()) == ["fresh", "locked", "owned"]
