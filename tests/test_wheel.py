"""Tests for builder.wheel: labels, and retagging a real setuptools-built wheel end to end.

The proof is pip itself: the retagged wheel installs into a fresh venv, `pip show` reports the
new version, and `importlib.metadata` there sees the rewritten Requires-Dist lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from builder.errors import BuilderError, UsageError
from builder.planning.labels import local_version_label
from builder.planning.requirements import RequirementRules
from builder.store.retag import (
    _rewrite_metadata,  # the byte-exact part, tested on its own
    read_provenance,
    retag,
)
from builder.wheelfile import check_record, read_metadata

REPO = Path(__file__).resolve().parents[1]
REQUIRES = ["torch>=2.0", "einops", 'numpy; python_version>"3"']
LABEL = "cu130torch2.14cxx11abiTRUE.sm86"
RULES = RequirementRules.make(("torch",), {"einops": "0.8.1", "ninja": "1.11.1.4"})
PROVENANCE = {"recipe": "tiny", "cuda": "13.0", "archs": ["86"], "dirty": False}
SETUP_PY = """\
from setuptools import setup
setup(name="Tiny-Pkg", version={version!r}, packages=["tiny_pkg"], scripts=["bin/tiny-tool"],
      install_requires={requires!r})
"""


def _can_build_wheels(python: str) -> bool:
    probe = "import setuptools.dist as d; d.Distribution().get_command_class('bdist_wheel')"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def _wheel_python() -> str:
    """A python whose setuptools has bdist_wheel (setuptools>=70.1, or the wheel package)."""
    for python in (sys.executable, str(REPO / ".venv" / "bin" / "python")):
        if Path(python).exists() and _can_build_wheels(python):
            return python
    pytest.skip("no python with setuptools bdist_wheel (setuptools>=70.1 or wheel) to build with")


def _build_wheel(root: Path, version: str) -> Path:
    project = root / f"src-{version}"
    (project / "tiny_pkg").mkdir(parents=True)
    (project / "tiny_pkg" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    (project / "bin").mkdir()
    (project / "bin" / "tiny-tool").write_text("#!/usr/bin/env python\nprint('tiny')\n")
    (project / "setup.py").write_text(SETUP_PY.format(version=version, requires=REQUIRES))
    dist = root / f"dist-{version}"
    subprocess.run(
        [
            _wheel_python(),
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(project),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    return wheel


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheels")
    return {v: _build_wheel(root, v) for v in ("1.0", "1.0+cu121")}


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata_bytes(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name)


@pytest.mark.parametrize(
    ("archs", "variants", "expected"),
    [
        (["86"], (), "cu130torch2.14.1cxx11abiTRUE.sm86"),
        (["80", "90"], (), "cu130torch2.14.1cxx11abiTRUE.sm80.sm90"),
        (["86+PTX"], (), "cu130torch2.14.1cxx11abiTRUE.sm86ptx"),
        (["90a"], (), "cu130torch2.14.1cxx11abiTRUE.sm90a"),
        (["8.6", "10.0a", "86"], (), "cu130torch2.14.1cxx11abiTRUE.sm86.sm100a"),
        (["90"], ("backwardoff", "hdim64x128"), "cu130torch2.14.1cxx11abiTRUE.sm90.backwardoff.hdim64x128"),
    ],
)
def test_local_version_label(archs: list[str], variants: tuple[str, ...], expected: str) -> None:
    got = local_version_label(cuda="13.0", torch="2.14.1+cu130", cxx11_abi=True, archs=archs, variants=variants)
    assert got == expected


def test_local_version_label_abi_false_and_short_versions() -> None:
    label = local_version_label(cuda="12.8.1", torch="2.7", cxx11_abi=False, archs=["120"])
    assert label == "cu128torch2.7cxx11abiFALSE.sm120"


@pytest.mark.parametrize(
    "kwargs",
    [{"archs": ["sm86x"]}, {"archs": ["86"], "variants": ["Fa-3"]}, {"archs": [], "cuda": "cuda13"}],
)
def test_local_version_label_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"cuda": "13.0", "torch": "2.14.1", "cxx11_abi": True, **kwargs}
    with pytest.raises(UsageError):
        local_version_label(**args)  # type: ignore[arg-type]


def test_rules_refuse_drop_and_pin_of_one_name() -> None:
    with pytest.raises(UsageError):
        RequirementRules.make(("torch",), {"Torch": "2.14.1"})


def test_retag_rewrites_name_version_requirements_and_record(built: dict[str, Path], tmp_path: Path) -> None:
    original = built["1.0"]
    before = _sha256(original)
    out = retag(original, tmp_path / "out", local=LABEL, rules=RULES, provenance=PROVENANCE)

    assert out.name == f"tiny_pkg-1.0+{LABEL}-py3-none-any.whl"
    assert _sha256(original) == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind
    meta = read_metadata(out)
    assert meta["Version"] == f"1.0+{LABEL}"
    assert meta.get_all("Requires-Dist") == [
        "einops==0.8.1",
        'numpy; python_version > "3"',
        "ninja==1.11.1.4",
    ]
    assert read_provenance(out) == PROVENANCE
    assert read_provenance(original) == {}
    check_record(out)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
    assert f"tiny_pkg-1.0+{LABEL}.dist-info/builder.json" in names
    assert f"tiny_pkg-1.0+{LABEL}.data/scripts/tiny-tool" in names
    assert not any(n.startswith("tiny_pkg-1.0.") for n in names)


def test_retag_keeps_other_metadata_lines_byte_identical(built: dict[str, Path], tmp_path: Path) -> None:
    out = retag(built["1.0"], tmp_path, local=LABEL, rules=RULES, provenance={})
    changed = (b"Version:", b"Requires-Dist:")
    old, new = (
        [ln for ln in _metadata_bytes(w).splitlines(True) if not ln.startswith(changed)]
        for w in (built["1.0"], out)
    )
    assert old == new


def test_rewrite_metadata_leaves_folded_headers_and_the_body_alone() -> None:
    text = (
        "Metadata-Version: 2.1\r\nName: x\r\nVersion: 1.0\r\nLicense: line one\r\n"
        "        line two\r\nRequires-Dist: Torch[cuda] (>=2.0) ; extra == 'gpu'\r\n"
        "Requires-Dist: einops>=0.6; python_version >= '3.9'\r\n\r\n"
        "Requires-Dist: torch in the description stays\r\n"
    )
    got = _rewrite_metadata(text.encode(), "1.0+cu130", RULES).decode()
    assert got == (
        "Metadata-Version: 2.1\r\nName: x\r\nVersion: 1.0+cu130\r\nLicense: line one\r\n"
        "        line two\r\n"
        'Requires-Dist: einops==0.8.1; python_version >= "3.9"\r\n'
        "Requires-Dist: ninja==1.11.1.4\r\n\r\n"
        "Requires-Dist: torch in the description stays\r\n"
    )


def test_retag_replaces_an_existing_local_version(built: dict[str, Path], tmp_path: Path) -> None:
    original = built["1.0+cu121"]
    assert read_metadata(original)["Version"] == "1.0+cu121"
    out = retag(original, tmp_path, local="cu130.sm90", rules=RequirementRules.make(), provenance={})
    assert out.name == "tiny_pkg-1.0+cu130.sm90-py3-none-any.whl"
    assert read_metadata(out)["Version"] == "1.0+cu130.sm90"
    assert read_metadata(out).get_all("Requires-Dist") == read_metadata(original).get_all("Requires-Dist")
    check_record(out)


def test_retag_refuses_a_bad_local_label(built: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        retag(built["1.0"], tmp_path, local="cu130-sm90", rules=RULES, provenance={})


def test_check_record_catches_a_changed_file(built: dict[str, Path], tmp_path: Path) -> None:
    out = retag(built["1.0"], tmp_path, local=LABEL, rules=RULES, provenance={})
    tampered = tmp_path / "tampered" / out.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(out) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data + b"# x\n" if info.filename.endswith("__init__.py") else data)
    with pytest.raises(BuilderError, match=r"tiny_pkg/__init__\.py"):
        check_record(tampered)


def test_retagged_wheel_installs_with_pip(built: dict[str, Path], venv: Path, tmp_path: Path) -> None:
    out = retag(built["1.0+cu121"], tmp_path, local=LABEL, rules=RULES, provenance=PROVENANCE)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [str(venv), "-m", "pip"]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", str(out)], check=True, env=env)

    show = subprocess.run([*pip, "show", "tiny-pkg"], check=True, capture_output=True, text=True)
    # pip shows the canonical (PEP 440: lower-case) form; METADATA keeps the label verbatim.
    assert f"Version: 1.0+{LABEL.lower()}" in show.stdout.splitlines()
    probe = (
        "import importlib.metadata as m, json;"
        "d = m.distribution('tiny-pkg');"
        "print(json.dumps([d.version, d.requires, d.read_text('builder.json')]))"
    )
    found = subprocess.run([str(venv), "-c", probe], check=True, capture_output=True, text=True)
    version, requires, provenance = json.loads(found.stdout)
    assert version == f"1.0+{LABEL}"
    assert requires == ["einops==0.8.1", 'numpy; python_version > "3"', "ninja==1.11.1.4"]
    assert json.loads(provenance) == PROVENANCE
    assert (venv.parent / "tiny-tool").exists()


def test_retag_copies_members_as_compressed_and_keeps_stored_ones(tmp_path: Path) -> None:
    """Deflated members keep their compressed bytes (no second deflate of a large .so); a stored
    member is written deflated; the contents, the RECORD and zip's own CRC check all hold."""
    library = os.urandom(1 << 16) + b"".join(b"%d\n" % i for i in range(1 << 16))  # part incompressible, part not
    wheel = tmp_path / "raw_pkg-1.0-cp312-cp312-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        # deflated at level 1, not zlib's default that builder writes with: a copy keeps its size
        archive.writestr("raw_pkg/_C.so", library, compresslevel=1)
        archive.writestr("raw_pkg/data.bin", b"stored " * 100, compress_type=zipfile.ZIP_STORED)
        archive.writestr("raw_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: raw-pkg\nVersion: 1.0\n")
        archive.writestr("raw_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n")
        archive.writestr("raw_pkg-1.0.dist-info/RECORD", "")
    out = retag(wheel, tmp_path / "out", local=LABEL, rules=RequirementRules(), provenance={})
    check_record(out)
    with zipfile.ZipFile(wheel) as before, zipfile.ZipFile(out) as after:
        assert after.testzip() is None
        assert after.read("raw_pkg/_C.so") == library and after.read("raw_pkg/data.bin") == b"stored " * 100
        so_before, so_after = before.getinfo("raw_pkg/_C.so"), after.getinfo("raw_pkg/_C.so")
        assert (so_after.compress_size, so_after.CRC) == (so_before.compress_size, so_before.CRC)
        assert after.getinfo("raw_pkg/data.bin").compress_type == zipfile.ZIP_DEFLATED
