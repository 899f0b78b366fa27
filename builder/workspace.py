"""What every command works in: the settings, the cache they name, the recipes they can find, the
user's environment as builder started, and where progress goes. Made once per command (or per
library call) and passed down; nothing below it reads settings or the environment again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.building.source import fetch
from builder.planning import compat
from builder.planning.farm import Farm, farm_from_settings
from builder.planning.provision_pypi import provisioned_roots
from builder.planning.recipe import RecipeBook
from builder.planning.request import Request
from builder.planning.source_spec import SourceSpec
from builder.planning.toolchain import Toolkit, discover_toolkits
from builder.planning.torch_facts import TorchFacts
from builder.reporting import LoggingReporter, Reporter
from builder.settings import Settings, load_settings
from builder.store.cache import Cache


@dataclass(frozen=True)
class Workspace:
    settings: Settings
    cache: Cache
    recipes: RecipeBook
    environ: Mapping[str, str]
    """The user's environment when builder started (builds get a filtered copy of it)."""
    reporter: Reporter

    @classmethod
    def open(cls, settings: Settings | None = None, *, reporter: Reporter | None = None,
             environ: Mapping[str, str] | None = None) -> Workspace:
        """A workspace over `settings` (default: the cascade without a command line)."""
        env = dict(os.environ if environ is None else environ)
        settings = settings or load_settings(environ=env)
        return cls(settings, Cache(settings.cache_dir), RecipeBook(settings.recipe_path), env,
                   reporter or LoggingReporter())

    def work_dir(self, key: str) -> Path:
        """Where the build of `key` compiles: the same path from every cache (settings: build-dir)."""
        return self.settings.build_dir / key

    def with_reporter(self, reporter: Reporter) -> Workspace:
        return dataclasses.replace(self, reporter=reporter)

    def fetch(self, spec: SourceSpec) -> Path:
        """A recipe's source, verified, from the configured index or through the URL mirrors."""
        return fetch(spec, self.cache.dir("sources"), index_url=self.settings.source_index,
                     mirrored=self.settings.mirrored)

    def torch_cuda(self, torch: str, index_url: str | None = None) -> str:
        """The CUDA the build of torch release `torch` on `index_url` (the configured index when
        None) is made for: compat's table, else read from the index and kept under the cache
        (builder/planning/torch_facts.py)."""
        return compat.pypi_torch_cuda(torch) or TorchFacts(
            index_url or self.settings.source_index, self.cache.root / "facts" / "torch.json").cuda_of(torch)

    def toolkits(self) -> list[Toolkit]:
        """The toolkits on this machine plus those provisioned into the cache."""
        return discover_toolkits(self.environ, extra_roots=provisioned_roots(self.cache.path("toolchains")))

    def farm(self) -> Farm | None:
        """The build farm the settings name, with its token (builder/planning/farm.py)."""
        return farm_from_settings(self.settings.farm, self.settings.farm_token, self.settings.farm_token_file)

    def complete(self, request: Request) -> Request:
        """The request with what it leaves open taken from the settings."""
        settings = self.settings
        return dataclasses.replace(
            request,
            archs=request.archs or settings.archs,
            jobs=request.jobs if request.jobs is not None else settings.jobs,
            jobs_origin="--jobs" if request.jobs is not None else settings.origins.get("jobs", "default"),
            memory_budget=request.memory_budget if request.memory_budget is not None else settings.memory_budget,
            ccache=(request.ccache or settings.ccache or bool(request.compile_cache or settings.compile_cache)
                    or bool(request.farm or settings.farm)),
            compile_cache=request.compile_cache or settings.compile_cache,
            farm=request.farm or self.farm(),
            split_compile=request.split_compile if request.split_compile is not None else settings.split_compile,
            torch_index=request.torch_index or settings.torch_index,
            cache_url=request.cache_url or settings.cache_url,
        )
