"""Where and how a build is installed (the install policy), and the install itself with its proof.

A build goes in as a wheel (`pip install` into the target interpreter) or as artifacts (only its
libraries, into a directory: the target's installed package, --install-dir, or a --source folder
holding the recipe's marker file). The choice is settled, and the place checked writable (for a
wheel: what installs it, the target's pip or else uv), before anything compiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.building.backends import Backend
from builder.delivery.artifacts import check_writable, install_artifacts, installed_package_dir, locate_package
from builder.delivery.install import install_wheel
from builder.delivery.verify import run_check_script, verify_install, verify_libraries
from builder.errors import UsageError, VerifyError
from builder.planning.frontend import Frontend, choose_frontend
from builder.planning.plan import Plan
from builder.planning.recipe import Recipe
from builder.planning.request import Request
from builder.reporting import Steps
from builder.store.cache import Cache, Entry


@dataclass(frozen=True)
class Destination:
    mode: str
    """"wheel" (pip install into `path`, an interpreter) or "artifacts" (libraries into `path`, a folder)."""
    path: Path
    installer: Frontend | None = None
    """What installs a wheel into `path`: its pip, or uv where it has none."""


def choose_destination(request: Request, plan: Plan) -> Destination | None:
    """How and where the build will be installed, checked writable; None for no install."""
    python = plan.install_python
    if python is None or not request.install:
        return None
    if install_mode(request, plan.recipe, python) != "artifacts":
        if request.install_dir:
            raise UsageError(f"--install-dir is where artifacts go, and {plan.recipe.name} installs as a wheel into "
                             f"{python}", hint="drop --install-dir" + (", or pass --install-mode artifacts"
                                                                      if plan.recipe.artifacts else ""))
        return Destination("wheel", python, choose_frontend(python, path=plan.env.get("PATH")))
    dest = artifacts_dir(request, plan, python)
    check_writable(dest)
    return Destination("artifacts", dest)


def install_mode(request: Request, recipe: Recipe, python: Path) -> str:
    """The mode asked for; "auto" is artifacts for a recipe whose libraries go into a directory,
    or into a package the target already has, and a wheel otherwise."""
    artifacts = recipe.artifacts
    if request.install_mode == "auto":
        if artifacts is None:
            return "wheel"
        if artifacts.package:
            return "artifacts" if locate_package(python, artifacts.package)[0] is not None else "wheel"
        return "artifacts"
    if request.install_mode == "artifacts" and artifacts is None:
        raise UsageError(f"{recipe.name} builds no libraries to install as artifacts",
                         hint="use --install-mode wheel")
    return request.install_mode


def artifacts_dir(request: Request, plan: Plan, python: Path) -> Path:
    """--install-dir; else the target's installed package the recipe names; else the --source
    directory when it holds the recipe's marker file."""
    recipe = plan.recipe
    if request.install_dir:
        return Path(request.install_dir).expanduser().resolve()
    artifacts = recipe.artifacts
    if artifacts is not None and artifacts.package:
        return installed_package_dir(python, artifacts.package, plan.version)
    beside = artifacts.beside if artifacts else ""
    source = Path(request.source).expanduser().resolve() if request.source else None
    if source is not None and beside and (source / beside).is_file():
        return source
    raise UsageError(f"where should {recipe.name}'s libraries go?",
                     hint="pass --install-dir DIR" + (f" (or a --source directory holding {beside})" if beside else ""))


def installed_libraries(members: list[str], python: Path) -> list[Path]:
    """Where a wheel install put the libraries at `members` (paths inside the wheel) in `python`."""
    libraries = []
    for member in members:
        package, _, rest = member.partition("/")
        folder, _ = locate_package(python, package)
        if folder is None:
            raise VerifyError(f"{package} is not importable from {python} after the install")
        libraries.append(folder / rest)
    return libraries


def install_and_verify(plan: Plan, backend: Backend, entry: Entry, cache: Cache, steps: Steps,
                       destination: Destination) -> dict[str, Any]:
    """Install the entry's wheel (or its libraries) and prove it works; the proof's report."""
    if destination.mode == "artifacts":
        return install_artifacts_and_verify(plan, backend, entry, cache, steps, destination.path)
    python = destination.path
    uv = destination.installer.uv if destination.installer else None
    with steps("install", f"install into {python}" + (f" with uv ({uv}): it has no pip" if uv else "")):
        install_wheel(cache.verified_wheel(entry), python, log_path=cache.log_file("install.log", steps.reporter.say),
                      frontend=destination.installer)
        cache.record_install(python, entry)
    with steps("verify"):
        verified = verify_install(plan, python)
        if libraries := backend.libraries(plan):
            verified.update(verify_libraries(plan, python, installed_libraries(libraries, python)))
        module = plan.recipe.wheel
        if module is not None and plan.backend == module.backend and plan.recipe.verify.artifact_check:
            verified["module_check"] = run_check_script(plan, python, ["--module", module.module])
    return verified


def install_artifacts_and_verify(plan: Plan, backend: Backend, entry: Entry, cache: Cache, steps: Steps,
                                 dest: Path) -> dict[str, Any]:
    with steps("install", f"install libraries into {dest}"):
        manifest = install_artifacts(cache.verified_wheel(entry), backend.libraries(plan), dest,
                                     recipe=plan.recipe.name, key=entry.key)
    libraries = [dest / f["name"] for f in manifest["files"]]
    with steps("verify"):
        python = plan.install_python or plan.target.python_exe
        verified: dict[str, Any] = {"artifacts": [str(p) for p in libraries],
                                    **verify_libraries(plan, python, libraries)}
        if plan.recipe.verify.artifact_check:
            verified["artifact_check"] = run_check_script(plan, python, [str(p) for p in libraries])
    return verified
