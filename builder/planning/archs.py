"""GPU architectures: parse every spelling a user types into one normalised form, once.

Accepted: 86, 8.6, sm_86, sm86, compute_86, 8.6+PTX, 90a, 9.0a, sm_90a, and lists joined by `,`,
`;` or spaces. The normal form is the digits plus an optional feature letter ("86", "90a"),
with `ptx=True` when PTX for that arch should be embedded too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from builder.errors import UsageError

_ARCH_RE = re.compile(
    r"^(?:sm_?|compute_?)?(?:(?P<major>\d{1,2})\.(?P<minor>\d)|(?P<number>\d{1,3}))(?P<suffix>[af]?)(?P<ptx>\+ptx)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, order=True)
class Arch:
    """One GPU architecture: compute capability digits, feature suffix, and whether to add PTX."""

    number: int
    suffix: str = ""
    ptx: bool = False

    @property
    def name(self) -> str:
        """Normal form without PTX: "86", "90a"."""
        return f"{self.number}{self.suffix}"

    @property
    def capability(self) -> str:
        """Dotted form torch uses in TORCH_CUDA_ARCH_LIST: "8.6", "9.0a", "8.6+PTX"."""
        text = f"{self.number // 10}.{self.number % 10}{self.suffix}"
        return text + "+PTX" if self.ptx else text

    @property
    def sm(self) -> str:
        """The cubin name cuobjdump prints: "sm_86", "sm_90a"."""
        return f"sm_{self.name}"

    def gencode(self) -> list[str]:
        """nvcc -gencode flags for this arch: the cubin, plus PTX when asked."""
        flags = [f"-gencode=arch=compute_{self.name},code=sm_{self.name}"]
        if self.ptx:
            flags.append(f"-gencode=arch=compute_{self.name},code=compute_{self.name}")
        return flags

    def __str__(self) -> str:
        return self.name + ("+PTX" if self.ptx else "")


def parse_arch(text: str) -> Arch:
    """Parse one arch in any accepted spelling; raise UsageError naming the bad input."""
    match = _ARCH_RE.match(text.strip())
    if match is None:
        raise UsageError(
            f"malformed arch {text!r}",
            hint="write it as 86, 8.6, sm_86 or 8.6+PTX (several: 80,90)",
        )
    if match["number"] is None:
        number = int(match["major"]) * 10 + int(match["minor"])
        if number < 10:
            raise UsageError(f"malformed arch {text!r}: compute capabilities start at 1.0",
                             hint="write the capability of the GPU, e.g. 8.6 or 86")
    elif int(match["number"]) < 10:
        raise UsageError(
            f"malformed arch {text!r}: a single digit is not a compute capability",
            hint="write the two digits of the capability, e.g. 86 or 8.6",
        )
    else:
        number = int(match["number"])
    return Arch(number=number, suffix=match["suffix"].lower(), ptx=match["ptx"] is not None)


def parse_archs(values: Iterable[str]) -> tuple[Arch, ...]:
    """Parse repeated and joined arch arguments into a sorted tuple without duplicates."""
    found: dict[str, Arch] = {}
    for value in values:
        for part in re.split(r"[,;\s]+", value.strip()):
            if not part:
                continue
            arch = parse_arch(part)
            previous = found.get(arch.name)
            ptx = arch.ptx or (previous.ptx if previous else False)
            found[arch.name] = Arch(arch.number, arch.suffix, ptx)
    if not found:
        raise UsageError("no arch given", hint="pass --arch, e.g. --arch 86")
    return tuple(sorted(found.values()))


def arch_list_text(archs: Iterable[Arch], sep: str = ";") -> str:
    """Join archs in normal form: "80;90", or with sep="," "80,90"."""
    return sep.join(str(arch) for arch in archs)


def torch_arch_list(archs: Iterable[Arch]) -> str:
    """TORCH_CUDA_ARCH_LIST for these archs, e.g. "8.0;8.6+PTX"."""
    return ";".join(arch.capability for arch in archs)
