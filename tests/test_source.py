"""Tests for builder.source: real archives on disk, a real HTTP index on 127.0.0.1 (the `index`
fixture, tests/index_servers.py)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder import index_client
from builder.building.source import extract, fetch
from builder.errors import FileAccessError, SourceError
from builder.files import sha256_of
from builder.planning.source_spec import SourceSpec
from tests.index_servers import Index

FILE = "tiny_ext-1.0.tar.gz"


# --- helpers -------------------------------------------------------------------------------


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An uncompressed tar holding `members`, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    compressors: dict[str, Callable[[bytes], bytes]] = {
        ".tar": bytes,
        ".bz2": bz2.compress,
        ".xz": lzma.compress,
    }
    path.write_bytes(compressors.get(path.suffix, gzip.compress)(tar_bytes(members)))
    return path


def write_zip(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
    return path


def normal_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        reg("tiny_ext-1.0/setup.py", b"print('hi')\n"),
        reg("tiny_ext-1.0/csrc/kernel.cu", b"__global__ void k() {}\n"),
        special("tiny_ext-1.0/kernel_link.cu", tarfile.SYMTYPE, "csrc/kernel.cu"),
        special("tiny_ext-1.0/include/kernel.cuh", tarfile.SYMTYPE, "../csrc/kernel.cu"),
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def assert_refused(archive: Path, tmp_path: Path, member: str) -> None:
    before = all_files(tmp_path)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(SourceError, match="refusing") as err:
        extract(archive, dest)
    assert member in err.value.message
    assert not dest.exists()
    assert all_files(tmp_path) - before <= {"out"}  # nothing else written, staging removed


@pytest.fixture
def archive_data() -> bytes:
    return gzip.compress(tar_bytes(normal_members()))


# --- extract: good archives ----------------------------------------------------------------


@pytest.mark.parametrize("name", [FILE, "tiny.tgz", "tiny.tar.bz2", "tiny.tar.xz", "tiny.tar"])
def test_extract_tar_formats_return_the_top_directory(tmp_path: Path, name: str) -> None:
    archive = write_tar(tmp_path / name, normal_members())
    top = extract(archive, tmp_path / "dest")
    assert top == tmp_path / "dest" / "tiny_ext-1.0"
    assert (top / "csrc" / "kernel.cu").read_bytes() == b"__global__ void k() {}\n"
    assert (top / "kernel_link.cu").is_symlink()
    assert os.readlink(top / "kernel_link.cu") == "csrc/kernel.cu"
    assert (top / "include" / "kernel.cuh").read_bytes() == b"__global__ void k() {}\n"
    assert all_files(tmp_path) == {
        name,
        "dest",
        *(f"dest/{p}" for p in all_files(tmp_path / "dest")),
    }


def test_extract_zip_returns_the_top_directory(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "tiny.zip", ["pkg/setup.py", "pkg/src/a.cu"])
    top = extract(archive, tmp_path / "dest")
    assert top == tmp_path / "dest" / "pkg"
    assert (top / "src" / "a.cu").read_bytes() == b"x"


def test_extract_several_top_entries_returns_dest(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / FILE, [reg("a.txt"), reg("b/c.txt")])
    dest = tmp_path / "dest"
    assert extract(archive, dest) == dest
    assert all_files(dest) == {"a.txt", "b", "b/c.txt"}


def test_extract_into_existing_empty_dest(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    archive = write_tar(tmp_path / FILE, normal_members())
    assert extract(archive, tmp_path / "dest").name == "tiny_ext-1.0"


def test_extract_refuses_a_non_empty_dest(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old").write_text("keep")
    archive = write_tar(tmp_path / FILE, normal_members())
    with pytest.raises(SourceError, match="not an empty directory"):
        extract(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == {"old"}


# --- extract: hostile archives -------------------------------------------------------------


def test_extract_refuses_dotdot_member(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / FILE, [reg("pkg/ok.txt"), reg("../evil", b"pwned")])
    assert_refused(archive, tmp_path, "../evil")
    assert not (tmp_path / "out" / "evil").exists()
    assert not (tmp_path / "evil").exists()


def test_extract_refuses_absolute_member(tmp_path: Path) -> None:
    target = tmp_path / "abs_evil"
    archive = write_tar(tmp_path / FILE, [reg("pkg/ok.txt"), reg(str(target), b"pwned")])
    assert_refused(archive, tmp_path, str(target))
    assert not target.exists()


def test_extract_refuses_symlink_leaving_the_tree(tmp_path: Path) -> None:
    link = special("pkg/escape", tarfile.SYMTYPE, "../../outside")
    archive = write_tar(tmp_path / FILE, [reg("pkg/ok.txt"), link])
    assert_refused(archive, tmp_path, "pkg/escape")


def test_extract_refuses_absolute_symlink(tmp_path: Path) -> None:
    link = special("pkg/passwd", tarfile.SYMTYPE, "/etc/passwd")
    assert_refused(write_tar(tmp_path / FILE, [link]), tmp_path, "pkg/passwd")


def test_extract_refuses_symlink_chain_that_escapes(tmp_path: Path) -> None:
    # Each link looks inside on its own; together `c` resolves to dest's parent.
    members = [
        special("b", tarfile.SYMTYPE, "."),
        special("c", tarfile.SYMTYPE, "b/.."),
        reg("c/evil", b"pwned"),
    ]
    archive = write_tar(tmp_path / FILE, members)
    with pytest.raises(SourceError, match="refusing"):
        extract(archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "evil").exists()
    assert not (tmp_path / "out" / "dest").exists()


def test_extract_refuses_hardlink_leaving_the_tree(tmp_path: Path) -> None:
    link = special("pkg/hard", tarfile.LNKTYPE, "../../etc/passwd")
    assert_refused(write_tar(tmp_path / FILE, [link]), tmp_path, "pkg/hard")


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_extract_refuses_device_and_fifo_members(tmp_path: Path, kind: bytes) -> None:
    archive = write_tar(tmp_path / FILE, [reg("pkg/ok.txt"), special("pkg/dev", kind)])
    assert_refused(archive, tmp_path, "pkg/dev")


@pytest.mark.parametrize("bad", ["../evil.txt", "pkg/../../evil.txt", "/abs_evil.txt"])
def test_extract_refuses_zip_escapes(tmp_path: Path, bad: str) -> None:
    archive = write_zip(tmp_path / "bad.zip", ["pkg/ok.txt", bad])
    assert_refused(archive, tmp_path, bad)
    assert not (tmp_path / "evil.txt").exists()


def test_extract_refuses_unknown_and_corrupt_archives(tmp_path: Path) -> None:
    (tmp_path / "x.rar").write_bytes(b"Rar!")
    with pytest.raises(SourceError, match=r"not a \.tar"):
        extract(tmp_path / "x.rar", tmp_path / "d1")
    (tmp_path / "x.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(SourceError, match="cannot extract"):
        extract(tmp_path / "x.tar.gz", tmp_path / "d2")
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()


# --- extract: a source directory -----------------------------------------------------------


def test_extract_copies_a_directory_with_one_top_dir(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "setup.py").write_text("s")
    top = extract(tmp_path / "src", tmp_path / "dest")
    assert top == tmp_path / "dest" / "pkg"
    assert (top / "setup.py").read_text() == "s"
    assert (tmp_path / "src" / "pkg" / "setup.py").exists()


def test_extract_copies_a_directory_keeping_inner_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "csrc").mkdir(parents=True)
    (src / "csrc" / "k.cu").write_text("k")
    (src / "link.cu").symlink_to("csrc/k.cu")
    dest = tmp_path / "dest"
    assert extract(src, dest) == dest
    assert os.readlink(dest / "link.cu") == "csrc/k.cu"
    assert (dest / "link.cu").read_text() == "k"


def test_extract_refuses_a_directory_with_an_outside_symlink(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    (src / "escape").symlink_to(tmp_path)
    with pytest.raises(SourceError, match="'escape'"):
        extract(src, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# --- fetch ---------------------------------------------------------------------------------


def test_fetch_pypi_resolves_downloads_and_verifies(
    tmp_path: Path, index: Index, archive_data: bytes
) -> None:
    index.publish("tiny-ext", FILE, archive_data, listed=sha(archive_data))
    spec = SourceSpec(pypi="Tiny_Ext", file=FILE, sha256=sha(archive_data))
    got = fetch(spec, tmp_path / "sources", index_url=f"{index.base}/simple")
    assert got == tmp_path / "sources" / FILE
    assert got.read_bytes() == archive_data
    assert os.listdir(tmp_path / "sources") == [FILE]
    path, accept = index.requests[0]
    assert path == "/simple/tiny-ext/" and accept.startswith("application/vnd.pypi.simple.v1+json")
    assert index.requests[1][0] == f"/files/{FILE}"
    assert extract(got, tmp_path / "work").name == "tiny_ext-1.0"


def test_fetch_hash_mismatch_leaves_nothing(
    tmp_path: Path, index: Index, archive_data: bytes
) -> None:
    index.publish("tiny-ext", FILE, archive_data, listed=None)
    wrong = "0" * 64
    spec = SourceSpec(pypi="tiny-ext", file=FILE, sha256=wrong)
    with pytest.raises(SourceError) as err:
        fetch(spec, tmp_path / "sources", index_url=f"{index.base}/simple/")
    assert wrong in err.value.message and sha(archive_data) in err.value.message
    assert os.listdir(tmp_path / "sources") == []


def test_fetch_refuses_when_the_index_lists_another_hash(
    tmp_path: Path, index: Index, archive_data: bytes
) -> None:
    index.publish("tiny-ext", FILE, archive_data, listed=sha(archive_data))
    spec = SourceSpec(pypi="tiny-ext", file=FILE, sha256="1" * 64)
    with pytest.raises(SourceError, match="lists sha256"):
        fetch(spec, tmp_path / "sources", index_url=f"{index.base}/simple")
    assert [path for path, _ in index.requests] == ["/simple/tiny-ext/"]
    assert not (tmp_path / "sources").exists()


def test_fetch_reuses_the_stored_file_without_network(
    tmp_path: Path, index: Index, archive_data: bytes
) -> None:
    index.publish("tiny-ext", FILE, archive_data, listed=sha(archive_data))
    spec = SourceSpec(pypi="tiny-ext", file=FILE, sha256=sha(archive_data))
    first = fetch(spec, tmp_path / "sources", index_url=f"{index.base}/simple")
    url = f"{index.base}/simple"
    index.stop()
    assert fetch(spec, tmp_path / "sources", index_url=url) == first
    assert fetch(spec, tmp_path / "sources", index_url=url, offline=True) == first


def test_fetch_a_corrupted_stored_file_is_an_error(tmp_path: Path, archive_data: bytes) -> None:
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / FILE).write_bytes(b"truncated")
    spec = SourceSpec(pypi="tiny-ext", file=FILE, sha256=sha(archive_data))
    with pytest.raises(SourceError, match="sha256 mismatch") as err:
        fetch(spec, tmp_path / "sources", offline=True)
    assert err.value.hint is not None and "delete" in err.value.hint


def test_fetch_offline_without_the_file(tmp_path: Path) -> None:
    spec = SourceSpec(pypi="tiny-ext", file=FILE, sha256="2" * 64)
    with pytest.raises(SourceError, match=r"builder fetch <recipe>.*--source"):
        fetch(spec, tmp_path / "sources", offline=True)


def test_fetch_url_source(tmp_path: Path, index: Index, archive_data: bytes) -> None:
    index.routes["/dl/tiny_ext-1.0.tar.gz"] = ("application/gzip", archive_data)
    spec = SourceSpec(url=f"{index.base}/dl/tiny_ext-1.0.tar.gz", sha256=sha(archive_data))
    got = fetch(spec, tmp_path / "sources")
    assert got == tmp_path / "sources" / "tiny_ext-1.0.tar.gz"
    assert sha256_of(got) == sha(archive_data)


def test_fetch_url_source_with_a_file_name_and_a_bad_hash(
    tmp_path: Path, index: Index, archive_data: bytes
) -> None:
    index.routes["/archive/v1"] = ("application/gzip", archive_data)
    url = f"{index.base}/archive/v1"
    good = SourceSpec(url=url, file="named.tar.gz", sha256=sha(archive_data))
    assert fetch(good, tmp_path / "s1").name == "named.tar.gz"
    bad = SourceSpec(url=url, file="named.tar.gz", sha256="3" * 64)
    with pytest.raises(SourceError, match=r"expected 3{64}, got"):
        fetch(bad, tmp_path / "s2")
    assert os.listdir(tmp_path / "s2") == []


def test_fetch_network_errors_name_the_url(tmp_path: Path, index: Index) -> None:
    missing = f"{index.base}/dl/missing.tar.gz"
    with pytest.raises(SourceError, match=rf"{re.escape(missing)}.*404"):
        fetch(SourceSpec(url=missing, sha256="4" * 64), tmp_path / "s")
    with pytest.raises(SourceError, match="has no file"):
        index.publish("tiny-ext", FILE, b"data", listed=None)
        spec = SourceSpec(pypi="tiny-ext", file="other-1.0.tar.gz", sha256="4" * 64)
        fetch(spec, tmp_path / "s", index_url=f"{index.base}/simple")
    base = index.base
    index.stop()
    gone = f"{base}/dl/x.tar.gz"
    with pytest.raises(SourceError, match=re.escape(f"cannot fetch {gone}")):
        fetch(SourceSpec(url=gone, sha256="4" * 64), tmp_path / "s")
    assert os.listdir(tmp_path / "s") == []


def test_fetch_honours_the_timeout(
    tmp_path: Path, index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_client, "TIMEOUT_S", 0.2)
    with pytest.raises(SourceError, match="/slow"):
        fetch(SourceSpec(url=f"{index.base}/slow", file="s.tar", sha256="5" * 64), tmp_path)
    assert os.listdir(tmp_path) == []


def test_fetch_from_a_file_index(tmp_path: Path, archive_data: bytes) -> None:
    (tmp_path / "simple" / "tiny-ext").mkdir(parents=True)
    (tmp_path / "simple" / "tiny-ext" / FILE).write_bytes(archive_data)
    spec = SourceSpec(pypi="tiny.ext", file=FILE, sha256=sha(archive_data))
    got = fetch(spec, tmp_path / "sources", index_url=(tmp_path / "simple").as_uri())
    assert got.read_bytes() == archive_data


def test_fetch_local_path(tmp_path: Path, archive_data: bytes) -> None:
    (tmp_path / "tree").mkdir()
    assert fetch(SourceSpec(path=str(tmp_path / "tree")), tmp_path / "s") == tmp_path / "tree"
    (tmp_path / FILE).write_bytes(archive_data)
    good = SourceSpec(path=str(tmp_path / FILE), sha256=sha(archive_data))
    assert fetch(good, tmp_path / "s") == tmp_path / FILE
    assert fetch(SourceSpec(path=str(tmp_path / FILE)), tmp_path / "s") == tmp_path / FILE
    with pytest.raises(SourceError, match="sha256 mismatch"):
        fetch(SourceSpec(path=str(tmp_path / FILE), sha256="6" * 64), tmp_path / "s")
    with pytest.raises(SourceError, match="does not exist"):
        fetch(SourceSpec(path=str(tmp_path / "nope.tar.gz")), tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SourceSpec(), "exactly one"),
        (
            SourceSpec(pypi="a", file="a.tar.gz", url="http://x/a.tar.gz", sha256="0" * 64),
            "exactly one",
        ),
        (SourceSpec(pypi="a", sha256="0" * 64), "needs a `file`"),
        (SourceSpec(url="http://x/a.tar.gz"), "no sha256"),
        (SourceSpec(url="http://x/a.tar.gz", sha256="abc"), "64 hex"),
        (SourceSpec(url="http://x/", sha256="0" * 64), "cannot take a file name"),
    ],
)
def test_fetch_refuses_bad_specs(tmp_path: Path, spec: SourceSpec, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        fetch(spec, tmp_path / "s", offline=True)


def test_sha256_of(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc" * 100_000)
    assert sha256_of(tmp_path / "f") == sha(b"abc" * 100_000)
    with pytest.raises(FileAccessError, match="cannot read"):
        sha256_of(tmp_path / "missing")
