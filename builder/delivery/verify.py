"""Proof that an install works: imports in a fresh process, the cubins inside, a GPU check.

The import runs in a new interpreter so an `undefined symbol` surfaces here and not in the
user's program. `cuobjdump --list-elf` names the cubins each extension holds; they must be
exactly the requested archs. A failing check shows the last lines of its output; one that fails
on a dynamic loader's error is run once more, and the report says so (builder/diagnosis.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from builder.diagnosis import UNDEFINED_SYMBOL, diagnose, loader_error
from builder.errors import VerifyError
from builder.planning.archs import Arch
from builder.planning.plan import Plan
from builder.planning.target import probe_interpreter
from builder.process import capture
from builder.resources import shipped_dir

_CUBIN_RE = re.compile(r"\bsm_(\d+[af]?)\b")
TAIL_LINES = 20  # lines of a failing check's output its error shows

_FIND_ORIGINS = """
import importlib.util, json, sys
print(json.dumps({m: (importlib.util.find_spec(m) or None) and importlib.util.find_spec(m).origin
                  for m in sys.argv[1:]}))
"""


def find_cuobjdump(python: Path, toolkit_bin: Path | None = None) -> Path | None:
    """cuobjdump from the toolkit, else the copy triton ships beside torch, else PATH."""
    if toolkit_bin is not None and (toolkit_bin / "cuobjdump").is_file():
        return toolkit_bin / "cuobjdump"
    result = capture([python, "-c", "import triton, os; print(os.path.dirname(triton.__file__))"])
    if result.returncode == 0 and result.stdout.strip():
        shipped = Path(result.stdout.strip()) / "backends" / "nvidia" / "bin" / "cuobjdump"
        if shipped.is_file():
            return shipped
    found = shutil.which("cuobjdump")
    return Path(found) if found else None


def run_check(argv: Sequence[str | os.PathLike[str]], what: str, *, timeout: float,
              env: Mapping[str, str] | None = None) -> tuple[CompletedProcess[str], str | None]:
    """Run one check; when it fails on a dynamic loader's error it is run once more. Returns the
    (last) result and, after a retry, the line that says so."""
    result = capture(argv, env=env, timeout=timeout)
    loader = loader_error(result.stderr or result.stdout) if result.returncode != 0 else None
    if loader is None:
        return result, None
    result = capture(argv, env=env, timeout=timeout)
    again = "passed" if result.returncode == 0 else "failed again"
    return result, f"{what} failed on a loader error ({loader}), ran it once more: {again}"


def check_failure(what: str, result: CompletedProcess[str], retried: str | None, *,
                  built_torch: str | None = None) -> VerifyError:
    """A failed check as one line (its last line of output, a known cause first), the retry said,
    and the last TAIL_LINES lines of its stderr (else stdout) kept for the user."""
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    last = lines[-1].strip() if lines else f"exit status {result.returncode}"
    known = diagnose(lines, causes=(UNDEFINED_SYMBOL,), facts={"torch": built_torch or "unknown"})
    message = f"{what}: {known.cause}: {last}" if known else f"{what}: {last}"
    if retried:
        message += " (failed again when run once more after a loader error)"
    return VerifyError(message, hint=known.hint if known else None, output_tail=lines[-TAIL_LINES:])


def check_imports(python: Path, modules: Sequence[str], *, built_torch: str | None = None) -> str | None:
    """Import each module in a fresh `python`; the first failure's last line is the error.
    Returns the note of a retry after a loader error, if there was one."""
    if not modules:
        return None
    # torch first, as every user program does: its extensions link against libc10/libtorch,
    # which only torch's own import puts in the process.
    code = ("import importlib, sys\ntry:\n    import torch\nexcept ImportError:\n    pass\n"
            "for m in sys.argv[1:]: importlib.import_module(m)")
    result, retried = run_check([python, "-c", code, *modules], "the import check", timeout=600)
    if result.returncode != 0:
        raise check_failure(f"import failed in {python}", result, retried, built_torch=built_torch)
    return retried


def list_cubins(cuobjdump: Path, library: Path) -> list[str]:
    """Arch names ("86", "90a") of the cubins embedded in a shared object."""
    result = capture([cuobjdump, "--list-elf", library])
    if result.returncode != 0:
        if "does not contain device code" in result.stderr + result.stdout:
            return []
        raise VerifyError(f"cuobjdump failed on {library}: {result.stderr.strip()}")
    return sorted({m[1] for m in _CUBIN_RE.finditer(result.stdout)})


def extension_files(python: Path, modules: Sequence[str]) -> dict[str, Path]:
    """Where each module would load from in `python`, without importing it."""
    result = capture([python, "-c", _FIND_ORIGINS, *modules])
    if result.returncode != 0:
        raise VerifyError(f"cannot locate {', '.join(modules)} in {python}: {result.stderr.strip()}")
    origins = json.loads(result.stdout)
    missing = [m for m, origin in origins.items() if not origin]
    if missing:
        raise VerifyError(f"{', '.join(missing)} not found in {python}")
    return {m: Path(origin) for m, origin in origins.items()}


def check_cubins(cuobjdump: Path, libraries: dict[str, Path], archs: Iterable[Arch]) -> dict[str, list[str]]:
    """Each library must hold cubins for exactly `archs`; returns what each holds."""
    wanted = sorted(arch.name for arch in archs)
    found = {name: list_cubins(cuobjdump, path) for name, path in libraries.items()}
    for name, cubins in found.items():
        if cubins != wanted:
            raise VerifyError(f"{name} holds cubins for {', '.join(cubins) or 'no arch'}, "
                              f"expected exactly {', '.join(wanted)}")
    return found


def run_gpu_check(python: Path, code: str, variants: Mapping[str, str], *,
                  built_torch: str | None = None) -> str | None:
    """Runs the recipe's check; BUILDER_VARIANTS (JSON) tells it the variants built, e.g. a subset.
    Returns the note of a retry after a loader error, if there was one."""
    env = {**os.environ, "BUILDER_VARIANTS": json.dumps(dict(variants))}
    result, retried = run_check([python, "-c", code], "the GPU check", env=env, timeout=1200)
    if result.returncode != 0:
        raise check_failure("GPU check failed", result, retried, built_torch=built_torch)
    return retried


def verify_install(plan: Plan, python: Path) -> dict[str, Any]:
    """Imports in a fresh process, the exact cubins, and the GPU check where a GPU is visible."""
    spec = plan.recipe.verify
    retried = [check_imports(python, spec.imports, built_torch=plan.torch_version)]
    report: dict[str, Any] = {"imports": list(spec.imports)}
    if spec.extensions:
        cuobjdump = find_cuobjdump(python, plan.toolkit.bin_dir())
        if cuobjdump is None:
            raise VerifyError("cuobjdump not found: cannot check the cubins",
                               hint="pip install nvidia-cuda-cuobjdump, or use a full toolkit")
        report["cubins"] = check_cubins(cuobjdump, extension_files(python, spec.extensions),
                                        plan.archs)
    target = probe_interpreter(python)
    if not spec.gpu_check:
        report["gpu_check"] = "none in recipe"
    elif not target.cuda_available:
        report["gpu_check"] = "skipped: no GPU visible"
    else:
        retried.append(run_gpu_check(python, spec.gpu_check, plan.variants, built_torch=plan.torch_version))
        report["gpu_check"] = "passed"
    if any(retried):
        report["retried"] = [note for note in retried if note]
    return report


# Runs `python -m MODULE` in-process, then lists the shared objects the process has mapped.
_RUN_MAIN = """
import json, runpy, sys
module, report = sys.argv[1], sys.argv[2]
sys.argv = [module]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
with open("/proc/self/maps") as maps:
    loaded = sorted({line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6})
with open(report, "w") as out:
    json.dump({"code": code, "loaded": [p for p in loaded if p.startswith("/")]}, out)
sys.exit(code)
"""


def verify_libraries(plan: Plan, python: Path, libraries: Sequence[Path]) -> dict[str, Any]:
    """Installed native libraries: cubins for exactly the requested archs, and the recipe's
    `python -m` self-check loading these files and no other copies of them."""
    report: dict[str, Any] = {}
    if plan.archs:
        cuobjdump = find_cuobjdump(python, plan.toolkit.bin_dir())
        if cuobjdump is None:
            raise VerifyError("cuobjdump not found: cannot check the cubins",
                              hint="pip install nvidia-cuda-cuobjdump, or use a full toolkit")
        report["cubins"] = check_cubins(cuobjdump, {p.name: p for p in libraries}, plan.archs)
    if plan.recipe.verify.main_module:
        gpu = probe_interpreter(python).cuda_available
        report["main_module"] = check_main_module(python, plan.recipe.verify.main_module, libraries, gpu=gpu)
    return report


def check_main_module(python: Path, module: str, libraries: Sequence[Path], *, gpu: bool) -> dict[str, Any]:
    """`python -m module` must exit 0 having loaded one of `libraries`, and no file of the same
    name from anywhere else (a stale copy on LD_LIBRARY_PATH, another site-packages). Without a
    GPU a package may rightly load none (bitsandbytes then takes its CPU library)."""
    with tempfile.TemporaryDirectory(prefix="builder-main-") as tmp:
        report_path = Path(tmp) / "report.json"
        result, retried = run_check([python, "-c", _RUN_MAIN, module, str(report_path)], f"`python -m {module}`",
                                    timeout=600)
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
    if result.returncode != 0 or report is None:
        raise check_failure(f"`python -m {module}` failed in {python}", result, retried)
    installed = {p.resolve() for p in libraries}
    names = {p.name for p in libraries}
    loaded = [Path(p) for p in report["loaded"] if Path(p).name in names]
    strays = [str(p) for p in loaded if p.resolve() not in installed]
    if strays:
        raise VerifyError(f"`python -m {module}` loaded {', '.join(strays)}, not the library builder installed")
    if not loaded and gpu:
        raise VerifyError(f"`python -m {module}` loaded none of {', '.join(sorted(names))}")
    return {"exit": 0, "loaded": [str(p) for p in loaded], **({} if gpu else {"gpu": "none visible"}),
            **({"retried": retried} if retried else {})}


def run_check_script(plan: Plan, python: Path, args: Sequence[str]) -> str:
    """The recipe's check script (beside the recipe) run by the target with `args` (the installed
    libraries, or --module NAME); it exits non-zero on a wrong result."""
    script = plan.recipe.verify.artifact_check
    if not script:
        return "none in recipe"
    base = plan.recipe.path.parent if plan.recipe.path else shipped_dir("recipes")
    result, retried = run_check([python, str(base / script), *args], script, timeout=600)
    if result.returncode != 0:
        raise check_failure(f"the install fails {script}", result, retried)
    return f"passed ({retried})" if retried else "passed"
