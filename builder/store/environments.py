"""Per-environment index roots: which cached builds load in one environment.

An environment is what decides whether a compiled extension loads: the interpreter's Python tag,
its torch (the exact release and torch's CUDA), the C++ ABI, and the GPU's compute capability.
Each has an index root of its own, beside /simple/ (everything):

    env/<python_tag>/torch<torch>/cu<cuda>/cxx11abi<TRUE|FALSE>/sm<gpu>/simple/
    env/cp311/torch2.14.1/cu130/cxx11abiTRUE/sm86/simple/

`builder cache serve` answers it for any environment; the local cache writes it as files for each
(python, torch, CUDA, ABI) its entries were built for, times the GPUs that CUDA can target. A
build is matched by its entry's plan (`meta["plan"]`: the target's python_tag, torch, torch_cuda
and cxx11_abi, and its archs), never by its file name. The torch segment is torch's public
release ("2.14.1" of "2.14.1+cu130") and the CUDA segment torch's CUDA: the pair names one torch
binary, whichever index it came from.

Which builds run on a GPU of capability X.Y (CUDA C++ Programming Guide, "Binary Compatibility"
and "Application Compatibility", docs.nvidia.com/cuda/cuda-c-programming-guide; family-specific
targets: developer.nvidia.com/blog/nvidia-blackwell-and-nvidia-cuda-12-9-introduce-family-specific-
architecture-features):
  - a cubin for sm_X.y runs on X.Y when y <= Y (same major): sm_80 runs on 8.6 and 8.9;
  - an arch-specific cubin (sm_90a) runs on exactly that capability; a family one (sm_100f) on
    its major with y <= Y;
  - PTX embedded for compute_A (a build with `--arch A+PTX`) is compiled by the driver for any
    capability >= A, also of a newer major: counted, ranked below every cubin (the first load
    JIT-compiles every kernel, and the driver must know the PTX ISA of the build's toolkit).
    Arch-specific PTX (compute_90a) is not forward compatible and counts for its own GPU only.
A build with no GPU code (archs empty: a pure-Python package of the recipe) runs on every GPU.

pip and uv take the highest version of a project, and local labels compare as text (sm90 above
sm100), so an environment root lists one build per project version and variant choice: the best
fit (an exact cubin, then the nearest lower cubin of the same major, then PTX; the newest entry
among equals). Every project the store has gets a page in every root, empty where nothing loads:
an installer then answers "no matching distribution" there, and uv, which stops at the first
index that has a project, does not go on to PyPI's sdist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename

from builder.errors import UsageError
from builder.planning import compat
from builder.planning.archs import Arch, parse_arch

_SEGMENTS = re.compile(r"^(?P<python>[a-z]+\d+[a-z]*)/torch(?P<torch>\d+(?:\.\d+)+)/(?P<cuda>cu\d+)/"
                       r"cxx11abi(?P<abi>TRUE|FALSE)/sm(?P<gpu>\d{2,3})$")


@dataclass(frozen=True, order=True)
class Base:
    """What a build was made against, apart from the GPU: it loads only where all of it matches."""

    python_tag: str
    """The interpreter's Python tag: "cp311"."""
    torch: str
    """torch's public release: "2.14.1" (torch reports "2.14.1+cu130")."""
    cuda: str
    """torch's CUDA as a tag: "cu130"."""
    cxx11_abi: bool


@dataclass(frozen=True)
class Environment:
    """One environment an index root serves: a Base and the GPU's compute capability."""

    base: Base
    gpu: int
    """Compute capability digits: 86 for 8.6."""

    @property
    def path(self) -> str:
        """The root's path below the store, without /simple/: "env/cp311/torch2.14.1/cu130/...". """
        b = self.base
        return f"env/{b.python_tag}/torch{b.torch}/{b.cuda}/cxx11abi{'TRUE' if b.cxx11_abi else 'FALSE'}/sm{self.gpu}"

    @classmethod
    def from_path(cls, segments: Iterable[str]) -> Environment | None:
        """The environment the five segments after env/ name, or None when they name none."""
        match = _SEGMENTS.match("/".join(segments))
        if match is None:
            return None
        return cls(Base(match["python"], match["torch"], match["cuda"], match["abi"] == "TRUE"), int(match["gpu"]))


def environment(*, python_tag: str, torch: str, torch_cuda: str, cxx11_abi: bool, gpu: str) -> Environment:
    """The environment of an interpreter (torch as it reports itself, "2.14.1+cu130") on a GPU
    given as an arch in any spelling (86, 8.6, sm_86)."""
    arch = parse_arch(gpu)
    if arch.suffix or arch.ptx:
        raise UsageError(f"{gpu!r} is a build target, not a GPU",
                         hint=f"name the GPU's compute capability, e.g. {arch.number}")
    return Environment(Base(python_tag, torch.split("+")[0], compat.cuda_tag(torch_cuda), cxx11_abi), arch.number)


def base_of(meta: Mapping[str, Any]) -> Base | None:
    """The Base an entry was built for, from its plan; None for an entry without one."""
    target = (meta.get("plan") or {}).get("target") or {}
    try:
        return Base(str(target["python_tag"]), str(target["torch"]).split("+")[0],
                    compat.cuda_tag(str(target["torch_cuda"])), bool(target["cxx11_abi"]))
    except (KeyError, TypeError, ValueError):
        return None


def fit(arch: Arch, gpu: int) -> tuple[int, int] | None:
    """How well code built for `arch` runs on a GPU of capability `gpu`: (2, _) an exact cubin,
    (1, arch) a lower cubin of the same major, (0, arch) PTX the driver compiles; None: it does not."""
    major, minor = divmod(arch.number, 10)
    gpu_major, gpu_minor = divmod(gpu, 10)
    if arch.number == gpu:
        return (2, arch.number)
    if arch.suffix != "a" and major == gpu_major and minor <= gpu_minor:
        return (1, arch.number)
    if arch.ptx and not arch.suffix and arch.number <= gpu:
        return (0, arch.number)
    return None


def build_fit(meta: Mapping[str, Any], gpu: int) -> tuple[int, int] | None:
    """The best fit of any of an entry's archs on `gpu`; a build without GPU code fits every GPU."""
    archs = [parse_arch(a) for a in (meta.get("plan") or {}).get("archs") or ()]
    if not archs:
        return (2, 0)
    fits = [f for f in (fit(a, gpu) for a in archs) if f is not None]
    return max(fits) if fits else None


def select(metas: Iterable[Mapping[str, Any]], env: Environment) -> list[Mapping[str, Any]]:
    """The entries that load in `env`: of each project version and variant choice, the best fit."""
    best: dict[tuple[str, str, str], tuple[tuple[int, int], str, Mapping[str, Any]]] = {}
    for meta in metas:
        if base_of(meta) != env.base:
            continue
        score = build_fit(meta, env.gpu)
        if score is None:
            continue
        name, version, _, _ = parse_wheel_filename(str(meta["wheel"]))
        variants = repr(sorted(((meta.get("plan") or {}).get("variants") or {}).items()))
        group = (canonicalize_name(name), version.public, variants)
        ranked = (score, str(meta.get("created", "")), meta)
        if group not in best or ranked[:2] >= best[group][:2]:
            best[group] = ranked
    return [ranked[2] for ranked in best.values()]


def gpus_for(base: Base) -> tuple[int, ...]:
    """The GPU capabilities torch's CUDA can target (compat's table), every known one when that
    CUDA is not in the table: the environments the local cache writes roots for."""
    digits = base.cuda.removeprefix("cu")
    row = compat.known_archs((int(digits[:-1]), int(digits[-1])))
    names = row if row is not None else {a for r in compat.ARCHS_FOR_CUDA.values() for a in r}
    return tuple(sorted({int(a) for a in names if a.isdigit()}))


def environments_of(metas: Iterable[Mapping[str, Any]]) -> list[Environment]:
    """Every environment the local cache writes a root for: each Base its entries were built for,
    on each GPU that Base's CUDA targets."""
    bases = sorted({b for b in (base_of(m) for m in metas) if b is not None})
    return [Environment(base, gpu) for base in bases for gpu in gpus_for(base)]
