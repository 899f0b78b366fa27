"""Installing a cached wheel into a target interpreter without touching its torch.

pip runs with --no-deps, after a check that the target's torch is the one the wheel was built
against (read from the wheel's provenance), so an install can never drag in another torch and
never leaves an extension that dies with `undefined symbol`. A target without pip (a `uv venv`)
gets `uv pip install --python` instead (builder/planning/frontend.py); one without pip or uv is
refused with the fix before anything is installed.
"""

from __future__ import annotations

from pathlib import Path

from builder.errors import BuildError, InstallError
from builder.planning.frontend import Frontend, choose_frontend
from builder.planning.target import probe_interpreter
from builder.process import call
from builder.store.retag import read_provenance


def torch_mismatch(wheel_torch: str | None, target_torch: str | None) -> str | None:
    """Why a wheel built against `wheel_torch` cannot go into a target with `target_torch`."""
    if not wheel_torch:
        return None
    if target_torch is None:
        return f"the wheel needs torch {wheel_torch}, the target has no torch"
    if wheel_torch != target_torch:
        return f"the wheel was built against torch {wheel_torch}, the target has torch {target_torch}"
    return None


def install_wheel(wheel: Path, python: Path, *, log_path: Path, frontend: Frontend | None = None,
                  path: str | None = None) -> None:
    """pip install --no-deps `wheel` into `python`, refusing a torch mismatch first; `frontend` is
    what installs (default: `python`'s pip, else uv from beside builder or on `path`)."""
    try:
        provenance = read_provenance(wheel)
    except BuildError as exc:
        raise InstallError(f"cannot install: {exc.message}",
                           hint="pass a wheel builder made, or a cache key (`builder cache list`)") from exc
    wheel_torch = provenance.get("torch")
    target = probe_interpreter(python)
    problem = torch_mismatch(str(wheel_torch) if wheel_torch else None, target.torch)
    if problem:
        raise InstallError(f"refusing to install {wheel.name}: {problem}",
                           hint="build for that torch (--torch or --python), or install elsewhere")
    frontend = frontend or choose_frontend(python, path=path)
    try:
        call(frontend.install_command(wheel), log_path=log_path, what=f"{frontend.name} install")
    except BuildError as exc:
        raise InstallError(f"{frontend.name} could not install {wheel.name} into {python}: "
                           f"{exc.cause or exc.first_error or exc.message}",
                           hint=f"{exc.hint}; see {exc.log_path}" if exc.hint else f"see {exc.log_path}") from exc
