"""Where builder's sccache keeps compiled steps (the compile-cache setting): the local cache's
sccache/ (--ccache alone), a directory a team shares, an S3 bucket (sccache's own S3 storage), or
`auto`: the `compile/` prefix beside the wheels of the cache-url setting, so the cells of a CI
matrix and the machines of a team that share wheels share compiled steps too.

sccache splits one nvcc call into its steps (cudafe++, cicc -> PTX, ptxas -> CUBIN, the host
compile: mozilla/sccache src/compiler/nvcc.rs, PR #2247) and caches each on its own, so a matrix
cell of another Python still finds the device code another cell compiled (the build's folder,
torch's and the toolkit's paths kept out of the keys: key.source_folder, sccache.hashed_relative),
a cell of another torch the CUBINs whose PTX comes out the same, and a cell re-run after a timeout
what the run before it stored. A compiled step changes no output, so the compile cache is no part
of a wheel's key.

sccache reads its S3 storage from SCCACHE_BUCKET, SCCACHE_S3_KEY_PREFIX, SCCACHE_REGION,
SCCACHE_ENDPOINT and SCCACHE_S3_USE_SSL (sccache docs/S3.md); the credentials are the usual AWS
variables, which the build's environment passes (builder/planning/environment.py). The endpoint
and region follow the ones boto3 reads for the cache-url (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
AWS_REGION, AWS_DEFAULT_REGION), so one set of variables serves both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.errors import UsageError

AUTO = "auto"
PREFIX = "compile"
"""The folder (or key prefix) beside a shared cache's wheels that `auto` uses."""
DEFAULT_REGION = "us-east-1"  # boto3's default for S3 when no region is configured


@dataclass(frozen=True)
class CompileCache:
    """One place sccache stores in: a directory, or an S3 bucket and key prefix."""

    where: str
    """A directory's absolute path, or s3://bucket/prefix."""

    @property
    def is_s3(self) -> bool:
        return self.where.startswith("s3://")

    def storage_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """sccache's variables for this storage, given the build's environment (its AWS variables)."""
        if not self.is_s3:
            return {"SCCACHE_DIR": self.where}
        bucket, _, prefix = self.where.removeprefix("s3://").partition("/")
        out = {"SCCACHE_BUCKET": bucket, "SCCACHE_S3_KEY_PREFIX": prefix.strip("/"),
               "SCCACHE_REGION": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION}
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            out["SCCACHE_ENDPOINT"] = endpoint
            out["SCCACHE_S3_USE_SSL"] = "false" if endpoint.startswith("http://") else "true"
        return out


def parse_setting(value: str) -> str:
    """The compile-cache setting as given: `auto`, s3://bucket[/prefix], or a directory (absolute)."""
    text = value.strip()
    if text == AUTO:
        return text
    if text.startswith("s3://"):
        if not text.removeprefix("s3://").split("/")[0]:
            raise ValueError("expected s3://bucket/prefix")
        return text.rstrip("/")
    if "://" in text:
        raise ValueError("expected a directory, s3://bucket/prefix or auto (sccache cannot store over http)")
    if not text:
        raise ValueError("expected a directory, s3://bucket/prefix or auto")
    return os.path.abspath(Path(text).expanduser())


def resolve(setting: str | None, cache_url: str | None) -> CompileCache | None:
    """Where a build's sccache stores by the setting (`auto`: beside the cache-url's wheels);
    None: the local cache's sccache folder."""
    if setting is None:
        return None
    if setting != AUTO:
        return CompileCache(setting)
    if cache_url is None:
        raise UsageError("compile-cache auto stores beside the shared cache's wheels, but no cache-url is set",
                         hint="set cache-url (--cache-url, BUILDER_CACHE_URL), or give the compile cache "
                              "as a directory or s3://bucket/prefix")
    if cache_url.startswith(("http://", "https://")):
        raise UsageError(f"compile-cache auto needs a cache-url builder can write, not {cache_url}",
                         hint="give the compile cache as a directory or s3://bucket/prefix")
    if cache_url.startswith("s3://"):
        return CompileCache(f"{cache_url.rstrip('/')}/{PREFIX}")
    folder = Path(cache_url.removeprefix("file://")).expanduser()
    return CompileCache(os.path.join(os.path.abspath(folder), PREFIX))
