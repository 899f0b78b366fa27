"""What a user asks builder to build: a recipe and the target's choices. The CLI makes one from
its flags; library users make one directly (`builder.BuildRequest`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.planning.farm import Farm


@dataclass(frozen=True)
class Request:
    """One build's choices; a field left at its default takes the settings' value (archs, jobs,
    memory budget, ccache, split compile, torch index, cache URL) or builder's own choice (version, CUDA)."""

    recipe: str
    """A recipe name (see `builder recipes`) or the path of a recipe file."""
    version: str | None = None
    cuda: str | None = None
    archs: tuple[str, ...] = ()
    torch: str | None = None
    torch_index: str | None = None
    python: str | None = None
    cxx11_abi: str = "auto"
    jobs: int | None = None
    """The most compile jobs at once (a cap on builder's own choice)."""
    jobs_origin: str = "--jobs"
    """Where the cap came from, for the plan's reason (the settings' origin of `jobs`)."""
    source: str | None = None
    provision: bool = False
    ccache: bool = False
    compile_cache: str | None = None
    """Where sccache stores (the compile-cache setting's value; implies ccache)."""
    farm: Farm | None = field(default=None, repr=False)
    """The build farm the device steps compile on (the farm settings; implies ccache)."""
    cache_url: str | None = None
    force: bool = False
    install: bool = True
    install_mode: str = "auto"
    """"wheel" (pip install), "artifacts" (libraries into install_dir), or "auto": the recipe's."""
    install_dir: str | None = None
    companions: bool = True
    """Build the recipe's companions ([deps] companions); False drops those requirements."""
    memory_budget: float | None = None
    """GB the running compiles may be expected to use together (default: builder/planning/jobs.py)."""
    split_compile: bool | None = None
    """Let the compile gate split long nvcc compiles over idle cores (None: the setting, default on)."""
    variants: tuple[str, ...] = ()
    """NAME=VALUE choices of the recipe's declared variants (--variant)."""
