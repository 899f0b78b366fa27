"""`builder index-url`: the index root that lists only the builds that load in one environment.

The environment is read from the target interpreter (its Python tag, torch, torch's CUDA and C++
ABI, by builder.planning.target's probe) and the GPU (--arch, else the one visible GPU arch). The
root is the local cache's file tree (file://<cache>/env/.../simple/) or a served cache's
(<server>/env/.../simple/); the layout is builder/store/environments.py's. Then

    ROOT=$(builder index-url) && pip install --only-binary flash-attn --index-url "$ROOT" \
        --extra-index-url https://pypi.org/simple flash-attn

takes the build that loads there or answers "no matching distribution"; the extra index is for
the package's other requirements. torch is never among them: recipes drop it from Requires-Dist
(or pin it to the target's release, which the target's torch satisfies), so pip never replaces
the torch a build was made for; the root itself is what ties a build to its torch.

`builder index-url --variants` prints the variants root of the target's torch instead
(builder/store/variants.py): no GPU is named, uv --preview-features wheel-variants picks the build
for the GPU and driver it finds.
"""

from __future__ import annotations

from pathlib import Path

from builder.errors import EnvironmentSetupError, UsageError
from builder.planning import compat
from builder.planning.target import TargetInfo, visible_gpu_capabilities
from builder.store.environments import Environment, environment
from builder.store.variants import VariantsRoot


def cuda_torch(target: TargetInfo) -> tuple[str, str, bool]:
    """The target's torch, torch's CUDA and C++ ABI; one line saying why when it has no CUDA torch."""
    if target.torch is None or target.torch_cuda is None or target.cxx11_abi is None:
        why = target.torch_error or "torch is not installed"
        if target.torch is not None:
            why = f"torch {target.torch} is a CPU-only build"
        raise EnvironmentSetupError(f"{target.python_exe} has no CUDA torch ({why}): no build loads there",
                                    hint="install the CUDA torch the builds are for, or pass --python")
    return target.torch, target.torch_cuda, target.cxx11_abi


def environment_of(target: TargetInfo, arch: str | None = None) -> Environment:
    """The environment of `target` on GPU `arch` (default: the visible GPUs' one arch)."""
    torch, torch_cuda, cxx11_abi = cuda_torch(target)
    if arch is None:
        visible = visible_gpu_capabilities(target)
        if len(visible) != 1:
            raise UsageError("no GPU is visible" if not visible else
                             f"GPUs of several archs are visible ({', '.join(visible)})",
                             hint="pass the GPU's arch, e.g. --arch 86")
        arch = visible[0]
    return environment(python_tag=target.python_tag, torch=torch, torch_cuda=torch_cuda, cxx11_abi=cxx11_abi,
                       gpu=arch)


def store_base(server: str | None, cache_root: Path) -> str:
    """The URL a store's paths hang from: the server's (a trailing /simple/ dropped), else the
    local cache's as a file:// URL."""
    if server is None:
        return cache_root.expanduser().resolve().as_uri()
    if not server.startswith(("http://", "https://")):
        raise UsageError(f"--server {server!r} is not an http(s) URL",
                         hint="give the address `builder cache serve` prints, e.g. http://host:8000")
    return server.rstrip("/").removesuffix("/simple")


def index_url(env: Environment, base: str) -> str:
    """The environment's index root below a store's base URL."""
    return f"{base}/{env.path}/simple/"


def variants_url(target: TargetInfo, base: str) -> str:
    """The variants root (builder/store/variants.py) of the torch `target` has, below a store's
    base URL: uv picks the build for the GPU and driver itself; the torch is the root's."""
    torch, torch_cuda, cxx11_abi = cuda_torch(target)
    root = VariantsRoot(torch.split("+")[0], compat.cuda_tag(torch_cuda), cxx11_abi)
    return f"{base}/{root.path}/simple/"
