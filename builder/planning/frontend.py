"""Which tool builds wheels in, and installs them into, an interpreter: its own pip, else uv.

pip runs as `python -m pip`, so it acts on the interpreter that runs it. An interpreter without
pip (a venv made by `uv venv`) is served by uv, with `--python` naming it: `uv build --wheel
--no-build-isolation` for a build and `uv pip install --no-deps` for an install. Both frontends
run the package's PEP 517 hooks in that same interpreter, with its torch and its setuptools, so
the wheel is the same and the cache key does not name the frontend (as it names no tool found on
PATH). The uv is the one installed beside builder (the `uv` package), else the one on PATH. An
interpreter with neither is refused when the build is planned, before anything compiles, with the
fix.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from builder.errors import EnvironmentSetupError
from builder.process import capture

MIN_UV = Version("0.5")
"""The oldest uv whose `uv build` has --no-build-isolation, --wheel and --no-config."""

_HAS_PIP = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('pip') else 3)"


@dataclass(frozen=True)
class Frontend:
    """How builder builds in, and installs into, one interpreter."""

    python: Path
    uv: str | None = None
    """uv's path when uv serves this interpreter; None: its own pip."""

    @property
    def name(self) -> str:
        return "pip" if self.uv is None else "uv"

    def wheel_command(self, source_dir: Path, out_dir: Path) -> list[str]:
        """A wheel of the tree at `source_dir`, built in this interpreter as it is (no isolated
        environment, nothing downloaded, no configuration files read) into `out_dir`."""
        if self.uv is None:
            return [str(self.python), "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                    "-v", "-w", str(out_dir), str(source_dir)]
        return [self.uv, "build", "--wheel", "--no-build-isolation", "--no-config", "--offline",
                "--python", str(self.python), "--out-dir", str(out_dir), str(source_dir)]

    def install_command(self, wheel: Path) -> list[str]:
        """`wheel` installed into this interpreter, replacing what it has of that project, nothing else."""
        if self.uv is None:
            return [str(self.python), "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-index",
                    str(wheel)]
        return [self.uv, "pip", "install", "--python", str(self.python), "--no-deps", "--reinstall",
                "--no-index", str(wheel)]

    def record(self) -> dict[str, str]:
        """What a plan records of it (build_env's "frontend", and "uv" when uv is used)."""
        return {"frontend": self.name, **({"uv": self.uv} if self.uv is not None else {})}


def recorded_frontend(record: Mapping[str, Any], python: Path) -> Frontend:
    """The frontend a plan's build_env records for its build interpreter (pip where it names none)."""
    uv = record.get("uv") if record.get("frontend") == "uv" else None
    return Frontend(python, str(uv) if uv else None)


def has_pip(python: Path) -> bool:
    """Whether `python -m pip` can run in `python` (pip importable there, found without importing it)."""
    return capture([python, "-c", _HAS_PIP]).returncode == 0


def builders_uv() -> str | None:
    """The uv binary of the `uv` package installed beside builder, if there is one."""
    try:
        found = importlib.import_module("uv").find_uv_bin()
    except (ImportError, AttributeError, OSError):  # FileNotFoundError: the package without its binary
        return None
    return str(found)


def uv_version(uv: str) -> Version | None:
    """`uv --version`'s release ("uv 0.9.2 (...)" -> 0.9.2), None when it does not answer one."""
    words = capture([uv, "--version"]).stdout.split()
    try:
        return Version(words[1]) if len(words) > 1 and words[0] == "uv" else None
    except InvalidVersion:
        return None


def choose_frontend(python: Path, *, path: str | None,
                    own_uv: Callable[[], str | None] = builders_uv) -> Frontend:
    """pip when `python` has it; else uv (`own_uv()`, builder's own, else `uv` on `path`, the
    user's PATH); else a refusal naming the fix."""
    if has_pip(python):
        return Frontend(python)
    uv = own_uv() or shutil.which("uv", path=path)
    if uv is None:
        raise EnvironmentSetupError(
            f"the target python {python} has no pip, and no uv was found (beside builder or on PATH) to "
            "build and install with instead",
            hint=f"give it pip (`uv pip install --python {python} pip`, or `{python} -m ensurepip`), "
                 "or put uv on PATH (e.g. `pip install uv` beside builder)")
    version = uv_version(uv)
    if version is None or version < MIN_UV:
        raise EnvironmentSetupError(
            f"the target python {python} has no pip, and the uv found to build and install with instead "
            f"({uv}, {f'version {version}' if version else 'no version'}) is older than {MIN_UV}",
            hint=f"update uv (`uv self update`, or `pip install -U uv`), or give the target pip "
                 f"(`uv pip install --python {python} pip`)")
    return Frontend(python, uv)
