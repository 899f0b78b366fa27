"""Reproducible rebuilds: the comparison `builder build --check` prints (real gcc objects in real
wheels), the gate's per-file nvcc seed, and the work directory that does not depend on the cache."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from builder.building.gate import with_seed
from builder.store.compare import compare_wheels
from builder.wheelfile import EXECUTABLE, write_wheel


def shared_object(folder: Path, text: str) -> Path:
    """A real shared object from gcc whose read-only data holds `text`."""
    folder.mkdir()
    (folder / "lib.c").write_text(f'const char *greeting(void) {{ return "{text}"; }}\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "lib.c", "-o", "lib.so"], check=True, cwd=folder)
    return folder / "lib.so"


def wheel(path: Path, files: dict[str, bytes], date_time: tuple[int, ...] = (1980, 1, 1, 0, 0, 0)) -> Path:
    with write_wheel(path, "demo-1.0.dist-info") as out:
        for name, data in files.items():
            out.add_bytes(name, data, date_time=date_time, attributes=EXECUTABLE)
        out.add_bytes("demo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    return path


def test_a_differing_shared_object_is_named_with_its_sections(tmp_path: Path) -> None:
    one = shared_object(tmp_path / "one", "hello").read_bytes()
    other = shared_object(tmp_path / "two", "howdy").read_bytes()
    first = wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl", {"demo/lib.so": one, "demo/a.txt": b"a"})
    second = wheel(tmp_path / "b" / "demo-1.0-py3-none-any.whl", {"demo/lib.so": other, "demo/b.txt": b"b"})
    result = compare_wheels(first, second)
    assert not result.identical
    by_name = {m.name: m for m in result.members}
    assert by_name["demo/a.txt"].what == "only in the first" and by_name["demo/b.txt"].what == "only in the second"
    lib = by_name["demo/lib.so"]
    assert lib.what == "content" and any(s.startswith(".rodata: ") for s in lib.sections), lib.sections
    assert ".text" not in " ".join(lib.sections)  # the code is the same: only the string moved
    assert ".rodata: 4 of 6 bytes differ" in lib.describe()


def test_equal_wheels_are_identical_and_zip_metadata_is_told_apart(tmp_path: Path) -> None:
    files = {"demo/x.py": b"x = 1\n"}
    first = wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl", files)
    assert compare_wheels(first, wheel(tmp_path / "b" / "demo-1.0-py3-none-any.whl", files)).identical
    later = wheel(tmp_path / "c" / "demo-1.0-py3-none-any.whl", files, date_time=(2020, 1, 1, 0, 0, 0))
    result = compare_wheels(first, later)
    assert not result.identical and result.members == ()
    assert any("time" in line for line in result.archive)


def test_each_nvcc_compile_gets_a_seed_of_its_own_file() -> None:
    nvcc = ["/usr/local/cuda/bin/nvcc", "-c", "csrc/a.cu", "-o", "a.o"]
    assert with_seed(nvcc, "csrc/a.cu")[-1] == "-frandom-seed=csrc/a.cu"
    assert with_seed(["/opt/sccache", *nvcc], "csrc/a.cu")[-1] == "-frandom-seed=csrc/a.cu"  # --ccache
    assert with_seed(["/usr/bin/g++", "-c", "a.cpp"], "a.cpp") == ["/usr/bin/g++", "-c", "a.cpp"]
    assert with_seed([*nvcc, "-frandom-seed=mine"], "csrc/a.cu") == [*nvcc, "-frandom-seed=mine"]


def test_retagged_members_are_in_name_order_with_fixed_times(tmp_path: Path) -> None:
    from builder.planning.requirements import RequirementRules
    from builder.store.retag import retag

    raw = tmp_path / "raw" / "demo-1.0-py3-none-any.whl"
    with write_wheel(raw, "demo-1.0.dist-info") as out:
        out.add_bytes("demo/z.py", b"", date_time=(2024, 5, 1, 12, 0, 0))
        out.add_bytes("demo/a.py", b"", date_time=(2025, 5, 1, 12, 0, 0))
        out.add_bytes("demo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    out_wheel = retag(raw, tmp_path / "out", local="cu130", rules=RequirementRules.make(), provenance={})
    with zipfile.ZipFile(out_wheel) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos][:2] == ["demo/a.py", "demo/z.py"]
    assert infos[-1].filename.endswith(".dist-info/RECORD")
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
