"""Which CUDA a torch release's build on the package index is made for: known, or read and kept.

compat.PYPI_TORCH_CUDA answers for the releases it lists (offline). For any other release the
answer is read from the release itself on the configured index (the index-url setting): one of
its Linux wheels' METADATA (PEP 658, else HTTP range requests: builder/lazy_wheel.py), whose CUDA
requirements name the CUDA, e.g. torch 2.14.1's
    Requires-Dist: cuda-toolkit[cublas,cudart,...]==13.0.3; platform_system == "Linux"
and torch 2.8.0's `nvidia-cuda-runtime-cu12==12.8.90`. The answer is kept in
<cache>/facts/torch.json (per index), so the next plan needs no network.
"""

from __future__ import annotations

import email.parser
import json
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.errors import BuilderError, SourceError, ToolchainError
from builder.files import write_text_atomic
from builder.index_client import IndexedFile, project_files
from builder.lazy_wheel import wheel_metadata
from builder.planning import compat

# Requirements that name the CUDA exactly (X.Y from their == pin), then those that name a major.
_EXACT = re.compile(r"^(?:cuda-toolkit|nvidia-cuda-runtime(?:-cu\d+)?)$")
_MAJOR = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d+)$")


def cuda_of_requirements(requires: Iterable[str]) -> str | None:
    """The CUDA a wheel's Requires-Dist lines name: "13.0" from cuda-toolkit==13.0.3 or
    nvidia-cuda-runtime(-cuNN)==X.Y.Z, else the major ("12") of its nvidia-*-cuNN packages,
    else None (a CPU build, or one that bundles its CUDA libraries)."""
    major = None
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue
        name = requirement.name.lower().replace("_", "-")
        if _EXACT.match(name):
            pins = [spec.version for spec in requirement.specifier if spec.operator in ("==", "===")]
            release = _release(pins[0]) if pins else None
            if release:
                return release
        found = _MAJOR.match(name)
        if found and major is None:
            major = str(int(found[1]))
    return major


def _release(text: str) -> str | None:
    try:
        release = Version(text.rstrip(".*")).release
    except InvalidVersion:
        return None
    return f"{release[0]}.{release[1]}" if len(release) >= 2 else None


def pick_wheel(files: Iterable[IndexedFile], torch: str, machine: str) -> IndexedFile | None:
    """A Linux wheel of exactly this torch release for this machine (any Python: their CUDA
    requirements are the same)."""
    wanted = Version(torch).public
    for file in files:
        try:
            _, version, _, tags = parse_wheel_filename(file.filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if version.public == wanted and not version.local and any(
                tag.platform.startswith(("manylinux", "linux")) and tag.platform.endswith(machine) for tag in tags):
            return file
    return None


def read_torch_cuda(torch: str, index_url: str, machine: str | None = None) -> tuple[str, str]:
    """(CUDA, the wheel it was read from) of `torch`'s build on `index_url`; SourceError when the
    index has no such build or it names no CUDA."""
    files = project_files(index_url, "torch")
    wheel = pick_wheel(files, torch, machine or platform.machine())
    if wheel is None:
        raise SourceError(f"{index_url} has no Linux {machine or platform.machine()} wheel of torch {torch}")
    metadata = email.parser.BytesParser().parsebytes(wheel_metadata(wheel))
    cuda = cuda_of_requirements(metadata.get_all("Requires-Dist") or [])
    if cuda is None:
        raise SourceError(f"{wheel.filename} requires no CUDA packages (a CPU-only build?)")
    return cuda, wheel.url


@dataclass(frozen=True)
class TorchFacts:
    """The CUDA of torch releases' builds on one index: compat's table, then what was read from the
    index before (kept in `cache_file`), then the index itself."""

    index_url: str
    cache_file: Path

    def cuda_of(self, torch: str) -> str:
        """The CUDA ("13.0", or a major "12") `torch`'s build on the index is made for; a
        ToolchainError saying why when it cannot be known."""
        known = compat.pypi_torch_cuda(torch)
        if known is not None:
            return known
        release = Version(torch).public
        kept = self._kept().get(self.index_url, {}).get(release)
        if isinstance(kept, dict) and isinstance(kept.get("cuda"), str):
            return str(kept["cuda"])
        try:
            cuda, source = read_torch_cuda(release, self.index_url)
        except BuilderError as exc:
            newest = "{}.{}".format(*max(compat.PYPI_TORCH_CUDA))
            raise ToolchainError(
                f"builder does not know which CUDA torch {torch}'s build uses: its table stops at torch {newest} "
                f"and reading it from {self.index_url} failed: {exc.message}",
                hint="pass --torch-index with a per-CUDA index (e.g. https://download.pytorch.org/whl/cu128), "
                     "or --index-url of an index that has this torch") from exc
        self._keep(release, cuda, source)
        return cuda

    def _kept(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _keep(self, release: str, cuda: str, source: str) -> None:
        data = self._kept()
        data.setdefault(self.index_url, {})[release] = {"cuda": cuda, "source": source}
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.cache_file, json.dumps(data, indent=2, sort_keys=True) + "\n")
