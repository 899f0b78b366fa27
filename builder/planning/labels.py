"""The local version label a build's wheel carries: what it was built for, in its name.

    flash_attn-2.8.3+cu130torch2.14.1cxx11abiTRUE.sm86.hdims64-cp311-cp311-linux_x86_64.whl

The label is dot-separated parts, in this order:
  cu<major><minor>   the CUDA toolkit that compiled it (cu130 for 13.0)
  torch<version>     the exact torch release it was built against, without torch's own local
                     label (torch2.14.1 for 2.14.1+cu130): two torch patch releases never share a name
  cxx11abiTRUE|FALSE the C++ ABI (_GLIBCXX_USE_CXX11_ABI), as flash-attn's own release wheels name it
  sm<arch>[ptx]      each arch with a cubin, `ptx` when PTX is embedded too (sm86, sm90a, sm86ptx)
  <variant><value>   each variant that differs from its default (hdims64x128, backwardoff)
The first three are joined without dots, as flash-attn's release wheels do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from packaging.version import InvalidVersion, Version

from builder.errors import UsageError
from builder.planning.archs import parse_arch


def _release(text: str, what: str) -> tuple[int, ...]:
    try:
        return Version(text).release
    except InvalidVersion:
        raise UsageError(f"{what}: {text!r} is not a PEP 440 version") from None


def local_version_label(
    *, cuda: str, torch: str, cxx11_abi: bool, archs: Sequence[str], variants: Sequence[str] = ()
) -> str:
    """``cu130torch2.14.1cxx11abiTRUE.sm86[.hdim64]`` for one build."""
    cu = (*_release(cuda, "CUDA version"), 0)[:2]
    _release(torch, "torch version")
    th = Version(torch).public
    parts = [f"cu{cu[0]}{cu[1]}torch{th}cxx11abi{'TRUE' if cxx11_abi else 'FALSE'}"]
    arch_list = [parse_arch(a) for a in archs]
    parts += dict.fromkeys(f"sm{a.name}{'ptx' if a.ptx else ''}" for a in arch_list)  # keep order
    for variant in variants:
        if not re.fullmatch(r"[a-z0-9]+", variant):
            raise UsageError(f"variant {variant!r} must be lowercase letters and digits only")
        parts.append(variant)
    return ".".join(parts)
