"""Known causes of a failed build or check, named before the raw error line.

One table of (pattern, cause, hint): the lines a real failure prints, read from the logs of real
failures (see each row), most specific first. `diagnose` finds the first row whose pattern a line
of the output matches; the build error then leads with that cause and its hint, and keeps the
first error line process.first_error_line picked as the raw evidence. Hints may name the facts of
the build (`{torch}`: the torch the wheel was built against).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Exit statuses of a program ended by SIGKILL (the OOM killer's signal): -9 from Popen, 137 from
# a shell or ninja reporting it.
KILLED_STATUSES = (-9, 137)


@dataclass(frozen=True)
class KnownCause:
    """A failure builder recognises: what it is, and what fixes it."""

    pattern: re.Pattern[str]
    cause: str
    hint: str


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    hint: str
    line: str
    """The line of the output that names it."""


_FREE_SPACE = ("free space on that disk (`df -h`; `builder cache gc` prunes old builds), or point the "
               "build-dir setting (BUILDER_BUILD_DIR, default /var/tmp/builder-build) or --cache at a bigger disk")
_LESS_MEMORY = ("run fewer compiles at once: --jobs 1, or a smaller --memory-budget (`builder stats RECIPE` "
                "shows each file's peak memory); `dmesg` names the OOM killer")

# The assembler on a full disk: "Fatal error: can't write 3887 bytes to section .debug_info of
# .../binding.o: 'No space left on device'" (a real build on a 1 MB tmpfs, tests/test_diagnosis.py);
# ld: "final link failed: No space left on device".
NO_SPACE = KnownCause(re.compile(r"No space left on device|Disk quota exceeded"),
                      "the disk is full (No space left on device)", _FREE_SPACE)
# g++ when the kernel's OOM killer ends cc1plus: "g++: fatal error: Killed signal terminated
# program cc1plus"; nvcc: "nvcc error   : 'cicc' died due to signal 9 (Kill signal)".
OOM_KILLED = KnownCause(re.compile(r"Killed signal terminated program \S+|died due to signal 9"),
                        "a compiler was killed, most likely by the out-of-memory killer", _LESS_MEMORY)
# crt/host_config.h of every nvcc: "#error -- unsupported GNU version! gcc versions later than
# 15 are not supported!" (CUDA 13.0's text; the limits per CUDA are compat.NEWEST_GCC_FOR_CUDA).
UNSUPPORTED_HOST = KnownCause(
    re.compile(r"unsupported (?:GNU|clang) version"),
    "nvcc does not accept this host compiler's version (unsupported GNU version)",
    "install a g++ within nvcc's limit (apt-get install g++-N: builder takes the newest g++-N on PATH that "
    "nvcc accepts), or build with another --cuda")
# The compiler's and the linker's own words for a toolkit without its headers or libraries.
MISSING_CUDA_HEADER = KnownCause(
    re.compile(r"\b(?:cuda_runtime(?:_api)?|cuda|cuda_fp16|cuda_bf16|cublas_v2|cublasLt|cusparse|curand|cufft"
               r"|cusolverDn|nvrtc|nvToolsExt|cudnn|nccl)\.h: No such file"),
    "CUDA headers are missing from the toolkit the build uses",
    "use a full toolkit: `builder toolchain install X.Y`, or CUDA_HOME pointing at one with include/")
MISSING_CUDA_LIBRARY = KnownCause(
    re.compile(r"cannot find -l(?:cudart|cuda|cublas\w*|cusparse|curand|cufft|cusolver|nvrtc|nvToolsExt|nvJitLink"
               r"|cudnn|nccl)\b"),
    "a CUDA library is missing at link time",
    "use a full toolkit (its lib64/ has the library): `builder toolchain install X.Y`, or CUDA_HOME pointing at one")
KNOWN_CAUSES: tuple[KnownCause, ...] = (NO_SPACE, OOM_KILLED, UNSUPPORTED_HOST, MISSING_CUDA_HEADER,
                                        MISSING_CUDA_LIBRARY)

# At verify: an extension whose symbols its torch lacks (ImportError: .../x.so: undefined symbol: ...).
UNDEFINED_SYMBOL = KnownCause(
    re.compile(r"undefined symbol: \S+"),
    "the extension needs a symbol that the torch it loads lacks (undefined symbol)",
    "it was built against torch {torch}: install exactly that torch in the target, or rebuild for the target's "
    "torch (--python / --torch); check that no other torch shadows it (`python -c 'import torch; "
    "print(torch.__file__)'`)")

# Errors of the dynamic loader that another try may not repeat (a library being replaced, a
# filesystem still settling): a check failing on one of these is run once more.
LOADER_ERROR = re.compile(r"cannot open shared object file|Cannot load|undefined symbol")


def diagnose(lines: Sequence[str], returncode: int | None = None,
             causes: Sequence[KnownCause] = KNOWN_CAUSES, facts: Mapping[str, str] | None = None) -> Diagnosis | None:
    """The first known cause (in table order) a line of `lines` shows; a program killed by SIGKILL
    with no such line is the OOM row."""
    for known in causes:
        for line in lines:
            if known.pattern.search(line):
                return Diagnosis(known.cause, known.hint.format_map(dict(facts or {})), line.strip())
    if returncode in KILLED_STATUSES:
        return Diagnosis(OOM_KILLED.cause, OOM_KILLED.hint, f"exit status {returncode}")
    return None


def loader_error(text: str) -> str | None:
    """The line of `text` that is a dynamic loader's error, if one is."""
    return next((line.strip() for line in text.splitlines() if LOADER_ERROR.search(line)), None)
