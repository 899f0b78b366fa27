"""The platform tag a built wheel can honestly carry: the manylinux tag its own ELF files allow.

auditwheel's policy logic, used as a library (auditwheel.wheel_abi.analyze_wheel_abi): the
versioned symbols each shared object needs (GLIBC_2.32, GLIBCXX_3.4.21, ...) and the libraries
it links pick the most compatible manylinux policy (PEP 600) they satisfy. Libraries that come
with torch or with CUDA stay external, as they do for torch's own manylinux wheels: torch's
(libc10, libtorch_*) are there whenever the extension can be imported, CUDA's come with torch's
nvidia wheels or the driver. Nothing is vendored or repaired; only the tag is computed. A wheel
that needs another library outside the manylinux whitelist (libgomp for an OpenMP build) keeps
`linux_<arch>`, since pip could not promise it on another distribution.

The tag is never newer than the glibc of the machine that built the wheel (what `builder plan`
shows as the best tag, builder/planning/target.py best_platform_tag).
"""

from __future__ import annotations

import logging
from pathlib import Path

from auditwheel.error import NonPlatformWheelError
from auditwheel.wheel_abi import analyze_wheel_abi

from builder.errors import BuildError

# Libraries of torch's own wheel (torch/lib of torch 2.14.1+cu130: libc10.so, libc10_cuda.so,
# libtorch*.so, libshm.so, libcaffe2_nvrtc.so) and of CUDA (nvidia/cu13/lib and nvidia/*/lib of
# the nvidia-* wheels torch requires: libcudart.so.13, libcublas.so.13, libcusparse.so.12, ...;
# libcuda.so.1 from the driver). Patterns over sonames (fnmatch), as `auditwheel repair --exclude` takes.
EXTERNAL: frozenset[str] = frozenset({
    "libc10.so", "libc10_*.so", "libtorch.so", "libtorch_*.so", "libshm.so", "libcaffe2_nvrtc.so",
    "libcuda.so*", "libcudart.so*", "libcublas*.so*", "libcufft*.so*", "libcurand.so*", "libcusolver*.so*",
    "libcusparse*.so*", "libnvrtc*.so*", "libnvJitLink.so*", "libcudnn*.so*", "libnccl.so*", "libnvshmem*.so*",
    "libcupti.so*", "libcufile*.so*", "libnvToolsExt.so*", "libnvtx3interop.so*",
})


def wheel_platform_tag(wheel: Path) -> str | None:
    """The most compatible platform tag `wheel`'s shared objects allow (e.g.
    "manylinux_2_34_x86_64"), or None when it holds no ELF file for a platform."""
    quiet = logging.getLogger("auditwheel")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # auditwheel logs each step at INFO
    try:
        info = analyze_wheel_abi(None, None, wheel, EXTERNAL, disable_isa_ext_check=False, allow_graft=False)
    except NonPlatformWheelError:
        return None
    except (RuntimeError, ValueError, OSError) as exc:
        raise BuildError(f"cannot read the shared objects of {wheel.name}: {exc}") from exc
    finally:
        quiet.setLevel(level)
    return str(info.overall_policy.name)
