"""Build environments: a venv holding exactly one torch plus a recipe's build requirements.

Made once per (torch, torch index, requirements, base Python) under cache/envs/<key>/ and reused.
pip runs in the user's environment with the user's own configuration (find-links, certificates,
a mirror); packages come from the package index builder is configured with (the index-url setting,
which defaults to pip's configured index), and torch from the torch index when one is chosen, the
package index then serving the rest. torch is pinned by a constraint while the other requirements
install, so nothing can replace it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from filelock import FileLock

from builder.errors import BuildError, EnvironmentSetupError
from builder.planning.key import digest
from builder.process import call

_COMPLETE = ".builder-env-complete"


def env_key(torch: str, index_url: str | None, requirements: Sequence[str], base_python: Path) -> str:
    return digest([torch, index_url, sorted(requirements), str(base_python)], 16)


def env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def ensure_env(
    *,
    torch: str,
    index_url: str | None,
    package_index: str,
    requirements: Sequence[str],
    envs_dir: Path,
    log_path: Path,
    base_python: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Python of a ready build environment with torch==`torch` from `index_url` (the torch index; None:
    `package_index`), the requirements from `package_index`; made on first use."""
    base = base_python or Path(sys.executable)
    env_dir = envs_dir / env_key(torch, index_url, requirements, base)
    envs_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(env_dir) + ".lock"):
        if (env_dir / _COMPLETE).is_file():
            return env_python(env_dir)
        shutil.rmtree(env_dir, ignore_errors=True)
        try:
            _create(env_dir, base, torch, index_url, package_index, requirements, log_path, environ)
        except BuildError as exc:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise EnvironmentSetupError(
                f"could not make a build environment with torch=={torch}: "
                f"{exc.cause or exc.first_error or exc.message}",
                hint=(f"{exc.hint}; see {log_path}" if exc.cause else
                      f"see {log_path}; pass --torch-index URL for a CUDA build PyPI does not carry"),
            ) from exc
        (env_dir / _COMPLETE).write_text(json.dumps({"torch": torch, "index_url": index_url}))
    return env_python(env_dir)


def pip_index_options(torch_index: str | None, package_index: str) -> list[str]:
    """pip's index options for torch: the torch index first, the package index for torch's own
    dependencies (from PyPI's mirror when the user has one, not PyPI itself)."""
    if torch_index:
        return ["--index-url", torch_index, "--extra-index-url", package_index]
    return ["--index-url", package_index]


def _create(env_dir: Path, base: Path, torch: str, torch_index: str | None, package_index: str,
            requirements: Sequence[str], log_path: Path, environ: Mapping[str, str] | None) -> None:
    call([base, "-m", "venv", env_dir], log_path=log_path, env=environ, what="python -m venv")
    python = env_python(env_dir)
    call([python, "-m", "pip", "install", f"torch=={torch}", *pip_index_options(torch_index, package_index)],
         log_path=log_path, env=environ, what=f"pip install torch=={torch}")
    constraints = env_dir / "torch-constraint.txt"
    constraints.write_text(f"torch=={torch}\n")
    if requirements:
        call([python, "-m", "pip", "install", "-c", constraints, *requirements,
              *pip_index_options(None, package_index)],
             log_path=log_path, env=environ, what="pip install of the build requirements")
