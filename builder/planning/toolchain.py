"""CUDA toolkits and host compilers: find them by their real trees, ask them what they can do.

A toolkit is found through CUDA_HOME / CUDA_PATH, /usr/local/cuda*, the nvcc on PATH (often a
wrapper script: `nvcc --dryrun` names its real TOP), and /usr for Debian's package. Each is asked
for its version (`nvcc --version`) and its targets (`nvcc --list-gpu-arch`), with compat's table
as the fallback.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ToolchainError, UsageError
from builder.planning import compat
from builder.planning.archs import Arch, parse_arch
from builder.process import capture

# nvcc options builder uses only where the toolkit has them (builder/building/reproducible.py):
# --objdir-as-tempdir is in the CUDA 11.2.1 reference (as mesonbuild/meson's compilers/cuda.py cites
# it); --frandom-seed is in 13.0's --help but not in that list, so each toolkit is asked.
ASKED_OPTIONS = ("--objdir-as-tempdir", "--frandom-seed")
_RELEASE_RE = re.compile(r"release (\d+)\.(\d+), V(\d+\.\d+\.\d+)")
_TOP_RE = re.compile(r"^#\$ TOP=(.+)$", re.M)


@dataclass(frozen=True)
class Toolkit:
    """One CUDA toolkit: where it is, what version, which archs it can target."""

    root: Path
    nvcc: Path
    version: str
    """Full nvcc version, e.g. "13.0.88"."""
    archs: tuple[str, ...]
    options: frozenset[str] = frozenset()
    """Which of `ASKED_OPTIONS` its `nvcc --help` lists (options some nvcc releases lack)."""
    codes: frozenset[str] = frozenset()
    """The real archs its `nvcc --help` allows for --gpu-code, with the arch-specific (`90a`) and
    family (`100f`) forms `--list-gpu-arch` leaves out; empty when the help lists none."""

    def knows(self, option: str) -> bool:
        return option in self.options

    @property
    def major_minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    @property
    def short(self) -> str:
        return "{}.{}".format(*self.major_minor)

    def can_target(self, arch: Arch) -> bool:
        """A plain number by `nvcc --list-gpu-arch`; an `a`/`f` form by the --gpu-code values of its
        --help (86a is no arch of any toolkit), else by compat's table for its release, else by
        its number alone."""
        if not arch.suffix:
            return arch.name in self.archs
        known = self.codes or frozenset(compat.known_archs(self.major_minor) or ())
        return arch.name in known if known else str(arch.number) in self.archs

    def targets(self) -> list[str]:
        """Every arch it can target, suffix forms included where it says them, in order."""
        return [str(arch) for arch in sorted(parse_arch(code) for code in self.codes or self.archs)]

    def bin_dir(self) -> Path:
        return self.nvcc.parent


@dataclass(frozen=True)
class HostCompiler:
    """A C/C++ compiler pair nvcc accepts as host compiler."""

    cc: str
    cxx: str
    major: int
    version: str
    """The full version (`g++ -dumpfullversion`, e.g. "12.2.0"): part of the cache key."""

    def env(self) -> dict[str, str]:
        """Variables that make every backend use it: torch reads CC (as -ccbin) and CXX,
        CMake reads CUDAHOSTCXX, nvcc itself reads NVCC_CCBIN."""
        return {"CC": self.cc, "CXX": self.cxx, "CUDAHOSTCXX": self.cxx, "NVCC_CCBIN": self.cxx}


def _candidate_roots(environ: Mapping[str, str]) -> list[Path]:
    roots: list[Path] = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(var):
            roots.append(Path(environ[var]))
    roots.extend(sorted(Path("/usr/local").glob("cuda*")))
    on_path = shutil.which("nvcc", path=environ.get("PATH"))
    if on_path:
        roots.append(_real_root(Path(on_path)))
    roots.append(Path("/usr"))
    return roots


def _real_root(nvcc: Path) -> Path:
    """The tree an nvcc, or a wrapper script around one, really belongs to (`#$ TOP=`)."""
    result = capture([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull], timeout=30)
    match = _TOP_RE.search(result.stderr + result.stdout)
    if match:
        return Path(match[1].strip().strip('"')).resolve()
    return nvcc.resolve().parent.parent


def _has_headers(root: Path) -> bool:
    return (root / "include" / "cuda_runtime_api.h").is_file() or any(
        root.glob("targets/*/include/cuda_runtime_api.h"))


def probe_toolkit(root: Path) -> Toolkit | None:
    """Ask the nvcc of a tree for its version and archs; None when it is no usable toolkit."""
    nvcc = root / "bin" / "nvcc"
    if not nvcc.is_file() or not _has_headers(root):
        return None
    version_out = capture([nvcc, "--version"], timeout=30).stdout
    match = _RELEASE_RE.search(version_out)
    if match is None:
        return None
    version = match[3]
    listed = capture([nvcc, "--list-gpu-arch"], timeout=30)
    archs = tuple(line.strip().removeprefix("compute_") for line in listed.stdout.split()
                  if line.startswith("compute_"))
    if listed.returncode != 0 or not archs:
        archs = compat.known_archs((int(match[1]), int(match[2]))) or ()
    helped = capture([nvcc, "--help"], timeout=30).stdout
    options = frozenset(option for option in ASKED_OPTIONS if re.search(rf"^{option}\b", helped, re.M))
    return Toolkit(root=root, nvcc=nvcc, version=version, archs=archs, options=options, codes=gpu_codes(helped))


def gpu_codes(helped: str) -> frozenset[str]:
    """The real archs `nvcc --help` allows for --gpu-code: its "Allowed values for this option"
    ('sm_86', 'sm_90a', 'sm_100f', ... in 13.0.88's), as "86", "90a", "100f"."""
    section = re.search(r"^--gpu-code\b(.*?)(?=^--|\Z)", helped, re.M | re.S)
    allowed = section[1].partition("Allowed values for this option:")[2] if section else ""
    return frozenset(re.findall(r"'sm_(\d+[af]?)'", allowed))


@functools.cache
def splits_compiles(nvcc: Path) -> bool:
    """Whether this nvcc has `--split-compile N` (one file's device optimisation over N threads), as
    its own --help says: 13.0.88's lists it, Debian's 11.8.89 does not (both checked here,
    tests/test_split.py); third parties place its arrival at 12.1 (tile-ai/tilelang PR #2809), so
    the help text decides, not a version number."""
    result = capture([nvcc, "--help"], timeout=30)
    return result.returncode == 0 and "--split-compile " in result.stdout


def discover_toolkits(environ: Mapping[str, str] | None = None, extra_roots: Sequence[Path] = ()) -> list[Toolkit]:
    """Every distinct toolkit on this machine (and in `extra_roots`, e.g. provisioned ones)."""
    env = os.environ if environ is None else environ
    found: dict[Path, Toolkit] = {}
    seen: set[Path] = set()
    for root in [*_candidate_roots(env), *extra_roots]:
        real = root.resolve()
        if real in seen:
            continue
        seen.add(real)
        toolkit = probe_toolkit(real)
        if toolkit is not None and toolkit.nvcc.resolve() not in {t.nvcc.resolve() for t in found.values()}:
            found[real] = toolkit
    return list(found.values())


_CUDA_RE = re.compile(r"^(\d{1,2})(?:\.(\d{1,2}))?(?:\.\d+)?$")


def parse_cuda(text: str) -> str:
    """--cuda as builder matches it: "X.Y" (from X.Y or X.Y.Z), or "X" for the newest X.y found.
    Anything else, the empty string included, is refused as malformed."""
    match = _CUDA_RE.match(text.strip())
    if match is None:
        raise UsageError(f"malformed CUDA version {text!r}",
                         hint="write it as X.Y (e.g. --cuda 12.8), or a major alone (--cuda 13: the newest 13.x found)")
    return f"{int(match[1])}.{int(match[2])}" if match[2] is not None else str(int(match[1]))


def select_toolkit(cuda: str, toolkits: list[Toolkit], *, hint: str | None = None) -> Toolkit:
    """The first toolkit whose major.minor equals `cuda` ("X.Y"), or the newest of that major
    (`cuda` "X"); a clear error listing what was found, with `hint` (how to get one) or where
    builder looked."""
    wanted = parse_cuda(cuda)
    if "." not in wanted:
        of_major = [t for t in toolkits if str(t.major_minor[0]) == wanted]
        if of_major:
            return max(of_major, key=lambda t: t.major_minor)
    for toolkit in toolkits:
        if toolkit.short == wanted:
            return toolkit
    where = ", ".join(f"{t.short} at {t.root}" for t in toolkits) or "none"
    named = wanted if "." in wanted else f"{wanted}.x"
    raise ToolchainError(
        f"no CUDA {named} toolkit found (found: {where})",
        hint=hint or f"looked in CUDA_HOME, CUDA_PATH, /usr/local/cuda*, nvcc on PATH and /usr; install CUDA "
                     f"{named} under /usr/local/cuda-{wanted} and/or set CUDA_HOME to its root",
    )


def gcc_version(program: str) -> str | None:
    """The full version of a gcc or g++ ("12.2.0"). `-dumpfullversion -dumpversion` prints the full
    version on gcc >= 7 and the -dumpversion answer on older ones, which lack -dumpfullversion
    (gcc docs, "Developer Options")."""
    result = capture([program, "-dumpfullversion", "-dumpversion"], timeout=30)
    text = result.stdout.strip()
    return text if result.returncode == 0 and text[:1].isdigit() else None


def host_compilers(environ: Mapping[str, str] | None = None) -> list[HostCompiler]:
    """g++ and every g++-N on PATH with its gcc twin, default first then newest first."""
    env = os.environ if environ is None else environ
    path = env.get("PATH")
    names = ["g++"]
    for directory in (path or "").split(os.pathsep):
        if os.path.isdir(directory):
            names += [entry for entry in os.listdir(directory) if re.fullmatch(r"g\+\+-\d+", entry)]
    compilers: list[HostCompiler] = []
    for cxx in dict.fromkeys(names):
        cxx_path = shutil.which(cxx, path=path)
        cc_path = shutil.which(cxx.replace("g++", "gcc"), path=path)
        version = gcc_version(cxx_path) if cxx_path else None
        if cxx_path and cc_path and version is not None:
            compilers.append(HostCompiler(cc=cc_path, cxx=cxx_path, major=int(version.split(".")[0]),
                                          version=version))
    default, rest = compilers[:1], sorted(compilers[1:], key=lambda c: -c.major)
    return default + rest


def select_host_compiler(toolkit: Toolkit, compilers: list[HostCompiler]) -> HostCompiler:
    """The default g++ when nvcc accepts it, else the newest g++-N within nvcc's limit."""
    limit = compat.newest_gcc(toolkit.major_minor)
    for compiler in compilers:
        if limit is None or compiler.major <= limit:
            return compiler
    found = ", ".join(dict.fromkeys(f"g++ {c.major}" for c in compilers)) or "no g++"  # g++ is often g++-12 too
    raise ToolchainError(
        f"nvcc {toolkit.short} accepts gcc up to {limit}, found {found}",
        hint=f"install a supported compiler, e.g. apt-get install g++-{limit}",
    )
