"""Bad input: one clear line, a non-zero exit, and nothing in the cache."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

import pytest

from builder.files import sha256_of
from tests.conftest import TORCHEXT, run_builder, write_recipe

ARCHS_11_8 = "35 37 50 52 53 60 61 62 70 72 75 80 86 87 89 90"


def fake_toolkit(root: Path, release: str, archs: str) -> Path:
    """A tree shaped like a CUDA toolkit whose nvcc answers only --version and --list-gpu-arch:
    enough for the checks that must refuse a plan before anything compiles."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime_api.h").write_text("")
    listed = "\\n".join(f"compute_{a}" for a in archs.split())
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in
          --version) echo "Cuda compilation tools, release {release}, V{release}.89";;
          --list-gpu-arch) printf '{listed}\\n';;
          *) echo "this nvcc compiles nothing" >&2; exit 1;;
        esac
        """))
    nvcc.chmod(0o755)
    return root


def assert_refused(result, code: int, *fragments: str, cache: Path | None = None) -> None:
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if cache is not None:
        entries = cache / "entries"
        assert not entries.exists() or not any(entries.iterdir())


def test_unknown_recipe(tmp_path: Path) -> None:
    result = run_builder("build", "flash-atn", "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 3, "unknown recipe 'flash-atn'", "did you mean 'flash-attn'?", cache=tmp_path)


def test_unknown_version(tmp_path: Path) -> None:
    result = run_builder("build", "flash-attn", "--version", "1.0", "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 3, "flash-attn has no version '1.0'", "2.8.3", cache=tmp_path)


def test_malformed_arch(tmp_path: Path) -> None:
    result = run_builder("build", "flash-attn", "--arch", "ampere", "--cache", str(tmp_path))
    assert_refused(result, 2, "malformed arch 'ampere'", cache=tmp_path)


def test_no_gpu_and_no_arch(tmp_path: Path) -> None:
    result = run_builder("plan", "flash-attn", "--cache", str(tmp_path))
    assert_refused(result, 2, "no GPU is visible and no --arch was given", "--arch 86")


def test_arch_beyond_the_local_toolkit(tmp_path: Path) -> None:
    result = run_builder("build", "causal-conv1d", "--arch", "35", "--cache", str(tmp_path))
    assert_refused(result, 4, "CUDA 13.0", "cannot target sm_35", cache=tmp_path)


def test_arch_beyond_cuda_11_8(tmp_path: Path) -> None:
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    result = run_builder("plan", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "100",
                         "--torch", "2.0.1",
                         "--torch-index", "https://download.pytorch.org/whl/cu118",
                         "--cache", str(tmp_path), env={"CUDA_HOME": str(cuda)})
    assert_refused(result, 4, "CUDA 11.8", "cannot target sm_100")


def test_no_toolkit_for_cuda(tmp_path: Path) -> None:
    result = run_builder("build", "causal-conv1d", "--cuda", "12.4", "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 4, "no CUDA 12.4 toolkit found", "13.0 at", cache=tmp_path)


def test_torch_cuda_major_mismatch(tmp_path: Path, fixture_recipe: Path) -> None:
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    result = run_builder("build", str(fixture_recipe), "--cuda", "11.8", "--arch", "86",
                         "--cache", str(tmp_path / "cache"), env={"CUDA_HOME": str(cuda)})
    assert_refused(result, 4, "torch is built with CUDA 13.0 but the toolkit is CUDA 11.8",
                   cache=tmp_path / "cache")


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sha256_mismatch(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "pkg-0.1.0.tar.gz", {"pkg/setup.py": b"print('hi')\n"})
    recipe = write_recipe(tmp_path, "pkg", f'{{ path = "{archive}", sha256 = "{"0" * 64}" }}')
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--arch", "86", "--cache", str(cache))
    assert_refused(result, 6, "sha256", sha256_of(archive), cache=cache)


def test_archive_escaping_its_tree(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "evil.tar.gz", {"pkg/setup.py": b"", "../escaped.txt": b"owned"})
    recipe = write_recipe(tmp_path, "evil", f'{{ path = "{archive}", sha256 = "{sha256_of(archive)}" }}')
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--arch", "86", "--cache", str(cache),
                         env={"BUILDER_BUILD_DIR": str(tmp_path / "build")})
    assert_refused(result, 6, "../escaped.txt", cache=cache)
    assert not list(tmp_path.rglob("escaped.txt"))  # the cache and the build directory included


def test_patch_that_does_not_apply(tmp_path: Path) -> None:
    patch = tmp_path / "broken.patch"
    patch.write_text(textwrap.dedent("""\
        --- a/setup.py
        +++ b/setup.py
        @@ -1,3 +1,3 @@
         this line
        -is not in
        +the fixture
         setup.py
        """))
    extra = f'[[patches]]\nfile = "{patch}"\n'
    recipe = write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}', extra=extra)
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--arch", "86", "--cache", str(cache))
    assert_refused(result, 7, "broken.patch does not apply", "setup.py hunk #1", cache=cache)


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_bad_jobs(tmp_path: Path, jobs: str) -> None:
    result = run_builder("plan", "flash-attn", "--arch", "86", "--jobs", jobs)
    assert_refused(result, 2, f"--jobs '{jobs}'", "at least 1")


def test_build_dir_with_a_comma_is_refused_before_compiling(fixture_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_builder("build", str(fixture_recipe), "--arch", "86", "--no-install", "--cache", str(cache),
                         env={"BUILDER_BUILD_DIR": str(tmp_path / "a,b")})
    assert_refused(result, 2, "contains a comma", "nvcc", "build-dir", cache=cache)
