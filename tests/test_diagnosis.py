"""Known causes named first: real failures (a build on a full disk, nvcc refusing its host
compiler, a compiler killed by SIGKILL, a missing CUDA header or library) through the same
process.call every build uses; the check that fails on a loader error is run once more."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from builder.cli.display import report_error
from builder.delivery.verify import TAIL_LINES, check_failure, check_imports, run_check
from builder.diagnosis import diagnose
from builder.errors import BuildError, VerifyError
from builder.process import call
from tests.conftest import TORCHEXT, run_builder, small_tmpfs, write_recipe

NVCC = Path("/usr/local/cuda/bin/nvcc")


def failed_call(tmp_path: Path, *cmd: str) -> BuildError:
    with pytest.raises(BuildError) as caught:
        call(list(cmd), log_path=tmp_path / "build.log", cwd=tmp_path)
    return caught.value


def test_a_build_on_a_full_disk_names_the_disk(tmp_path: Path) -> None:
    """A real fixture build whose build directory lies on a 1 MB tmpfs."""
    recipe = write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}')
    cache = tmp_path / "cache"
    with small_tmpfs(tmp_path / "build", "1m") as build_dir:
        result = run_builder("build", str(recipe), "--arch", "86", "--no-install", "--cache", str(cache), "--json",
                             env={"BUILDER_BUILD_DIR": str(build_dir)})
    document = json.loads(result.stdout)
    assert result.returncode == 8, result.stderr
    assert document["error"].endswith("failed with exit code 1: the disk is full (No space left on device)")
    assert "No space left on device" in document["cause_line"] and document["first_error"]
    assert "free space" in document["hint"]
    assert Path(document["log"]).is_file()


@pytest.mark.skipif(not NVCC.is_file(), reason="needs nvcc at /usr/local/cuda")
def test_nvcc_refusing_its_host_compiler(tmp_path: Path) -> None:
    """nvcc's own check in crt/host_config.h, met for real: __GNUC__ set past its limit."""
    (tmp_path / "k.cu").write_text("__global__ void k() {}\n")
    error = failed_call(tmp_path, str(NVCC), "-c", "k.cu", "-o", "k.o", "-D__GNUC__=99")
    assert error.cause == "nvcc does not accept this host compiler's version (unsupported GNU version)"
    assert "unsupported GNU version" in str(error.cause_line) and "g++-N" in str(error.hint)
    assert error.message.endswith(f": {error.cause}")


def test_a_compiler_killed_by_sigkill(tmp_path: Path) -> None:
    """What the OOM killer does to cc1plus (SIGKILL), done by a cc1plus that g++ finds first (-B)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "cc1plus").write_text("#!/bin/sh\nkill -9 $$\n")
    (fake / "cc1plus").chmod(0o755)
    (tmp_path / "m.cpp").write_text("int main() { return 0; }\n")
    error = failed_call(tmp_path, "g++", f"-B{fake}/", "-c", "m.cpp", "-o", "m.o")
    assert error.cause == "a compiler was killed, most likely by the out-of-memory killer"
    assert error.cause_line == "g++: fatal error: Killed signal terminated program cc1plus"
    assert "--jobs 1" in str(error.hint)
    killed = failed_call(tmp_path, "sh", "-c", "kill -9 $$")  # no line at all, only the status
    assert killed.returncode == -9 and killed.cause == error.cause


def test_missing_cuda_header_and_library(tmp_path: Path) -> None:
    (tmp_path / "h.cpp").write_text("#include <cuda_runtime_api.h>\nint main() { return 0; }\n")
    header = failed_call(tmp_path, "g++", "--sysroot=/nonexistent", "-c", "h.cpp", "-o", "h.o")
    assert header.cause == "CUDA headers are missing from the toolkit the build uses"
    assert header.cause_line == "h.cpp:1:10: fatal error: cuda_runtime_api.h: No such file or directory"
    (tmp_path / "m.cpp").write_text("int main() { return 0; }\n")
    library = failed_call(tmp_path, "g++", "m.cpp", "-o", "m", "-lcudnn")
    assert library.cause == "a CUDA library is missing at link time"
    assert library.cause_line == "/usr/bin/ld: cannot find -lcudnn: No such file or directory"
    assert library.first_error == "collect2: error: ld returned 1 exit status"  # the raw line stays


def test_the_table_on_lines_of_other_tools() -> None:
    nvcc_killed = ["nvcc error   : 'cicc' died due to signal 9 (Kill signal)"]
    assert "killed" in str(diagnose(nvcc_killed, 255))
    linker = ["/usr/bin/ld: final link failed: No space left on device", "collect2: error: ld returned 1"]
    found = diagnose(linker, 1)
    assert found is not None and found.cause.startswith("the disk is full") and found.line == linker[0]
    assert diagnose(["error: expected ';' before '}' token"], 1) is None


def flaky_module(folder: Path, name: str, *, times: int) -> None:
    """A module whose import fails `times` times with a real dlopen error, then imports."""
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""\
        import ctypes, pathlib
        marker = pathlib.Path(__file__).with_suffix(".tries")
        tries = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(tries + 1))
        if tries < {times}:
            ctypes.CDLL("libbuilder_not_there.so")
        """))


def test_a_check_failing_on_a_loader_error_runs_once_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flaky_module(tmp_path, "flaky_once", times=1)
    flaky_module(tmp_path, "flaky_always", times=99)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    note = check_imports(Path(sys.executable), ["flaky_once"])
    assert note is not None and note.startswith("the import check failed on a loader error")
    assert "libbuilder_not_there.so: cannot open shared object file" in note and note.endswith("passed")
    with pytest.raises(VerifyError) as caught:
        check_imports(Path(sys.executable), ["flaky_always"], built_torch="2.14.1+cu130")
    assert "cannot open shared object file" in caught.value.message
    assert caught.value.message.endswith("(failed again when run once more after a loader error)")
    assert (tmp_path / "flaky_always.tries").read_text() == "2"
    assert any("Traceback" in line for line in caught.value.output_tail)


def test_a_failing_check_shows_its_last_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = "import sys\nfor i in range(30): print(f'line {i}', file=sys.stderr)\nsys.exit(1)\n"
    result, retried = run_check([sys.executable, "-c", script], "a check", timeout=60)
    assert result.returncode == 1 and retried is None
    error = check_failure("a check failed", result, retried)
    assert error.message == "a check failed: line 29"
    assert error.output_tail == [f"line {i}" for i in range(30 - TAIL_LINES, 30)]
    report_error(error)
    shown = capsys.readouterr().err
    assert f"its last {TAIL_LINES} lines of output:" in shown and "    line 10" in shown and "line 9\n" not in shown


def test_an_undefined_symbol_names_the_torch_built_against(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real shared object with a symbol nothing defines, loaded the way an extension is."""
    (tmp_path / "u.cpp").write_text('extern "C" void builder_missing_fn();\n'
                                    'extern "C" void entry() { builder_missing_fn(); }\n')
    call(["g++", "-shared", "-fPIC", "u.cpp", "-o", "libu.so"], log_path=tmp_path / "b.log", cwd=tmp_path)
    (tmp_path / "usesym.py").write_text(f"import ctypes, os\nctypes.CDLL({str(tmp_path / 'libu.so')!r}, os.RTLD_NOW)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(VerifyError) as caught:
        check_imports(Path(sys.executable), ["usesym"], built_torch="2.14.1+cu130")
    error = caught.value
    assert "the extension needs a symbol that the torch it loads lacks (undefined symbol)" in error.message
    assert "undefined symbol: builder_missing_fn" in error.message
    assert "built against torch 2.14.1+cu130" in str(error.hint)
