"""What of the user's environment reaches a build: one table, one rule.

A build's environment is made of exactly three parts:

1. the variables the plan sets (toolkit, host compiler, archs, jobs, the recipe's env, the
   chosen variants, SOURCE_DATE_EPOCH; `builder plan` lists them under "env");
2. the user's values of the PASS rows below: they cannot change the binary (who the user is,
   where temporary files go, how to reach the network);
3. the user's values of the KEY rows: they can change the binary, so each one set goes into the
   cache key and `builder plan` shows it under "from your environment (in the cache key)".

Every other variable is dropped. The dropped ones a build would read (the DROP rows, and the
variables the plan sets itself, e.g. a TORCH_CUDA_ARCH_LIST or CC in the user's shell) are named
by `builder plan` and noted by `builder build`, each with its reason (not the MAKEFLAGS a running
make passes down with only its own output and job flags: `from_make_itself`). A variable the user
sets that a build reads can therefore never change a wheel without changing its key.

A row names variables exactly (`CFLAGS`) or by prefix (`LC_*`); an exact name wins over a prefix,
a longer prefix over a shorter one. The README's table "The build environment" is this table.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["pass", "key", "drop"]


@dataclass(frozen=True)
class Row:
    names: tuple[str, ...]
    kind: Kind
    why: str


TABLE: tuple[Row, ...] = (
    # --- passed through: cannot change the binary ---
    Row(("HOME", "USER", "LOGNAME"), "pass", "who runs the build: per-user caches and configuration"),
    Row(("LANG", "LANGUAGE", "LC_*"), "pass", "the language of messages and the encoding of file names"),
    Row(("TERM",), "pass", "the terminal the output goes to"),
    Row(("TMPDIR",), "pass", "where compilers write temporary files (nvcc's are named after the object "
                             "file with --objdir-as-tempdir, so their names do not reach the binary)"),
    Row(("http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
         "ALL_PROXY"), "pass", "how to reach the network"),
    Row(("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "PIP_CLIENT_CERT"),
        "pass", "which certificates to trust"),
    Row(("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_FIND_LINKS", "PIP_PROXY", "PIP_TIMEOUT",
         "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES", "PIP_CACHE_DIR", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK",
         "PIP_NO_INPUT", "PIP_KEYRING_PROVIDER", "PIP_PROGRESS_BAR", "PIP_ROOT_USER_ACTION"),
        "pass", "pip's index, mirror and cache (the build's own pip runs with --no-index --no-deps)"),
    Row(("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_FIND_LINKS", "UV_INSECURE_HOST",
         "UV_NATIVE_TLS", "UV_CACHE_DIR", "UV_NO_CACHE", "UV_HTTP_TIMEOUT", "UV_CONCURRENT_DOWNLOADS", "UV_OFFLINE",
         "UV_KEYRING_PROVIDER", "UV_INDEX_STRATEGY"), "pass", "uv's index, mirror and cache"),
    Row(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE",
         "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
         "AWS_CA_BUNDLE"), "pass", "how to reach an S3 compile cache (the build's sccache server reads them)"),
    Row(("XDG_CACHE_HOME", "XDG_CONFIG_HOME"), "pass", "where per-user caches and configuration live"),
    Row(("CUDA_VISIBLE_DEVICES",), "pass", "which GPUs a build's probes see; the archs come from the plan"),
    Row(("PATH",), "pass", "where programs are found; builder puts the toolkit's bin first, and names the "
                           "compilers by full path (tools found on it, such as ninja or cmake, are not in the key)"),
    # --- kept and hashed into the cache key: they change compiles ---
    Row(("CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS"), "key",
        "compiler and linker flags setuptools, CMake and make add to every compile or link"),
    Row(("NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS"), "key", "flags every nvcc adds to its command line"),
    Row(("CUDAFLAGS",), "key", "CMake's initial CMAKE_CUDA_FLAGS"),
    Row(("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH"), "key", "header folders gcc searches"),
    Row(("LIBRARY_PATH",), "key", "library folders gcc's linker searches"),
    Row(("CMAKE_ARGS",), "key", "options scikit-build-core (and many setup.py files) pass to CMake"),
    Row(("BUILDER_CC",), "key", "the C compiler of the cc backend"),
    # --- dropped with a note: a build would read them, builder does not pass them ---
    Row(("CC", "CXX", "CUDAHOSTCXX", "NVCC_CCBIN"), "drop", "builder sets the host compiler it chose"),
    Row(("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDACXX"), "drop", "builder sets the toolkit it chose"),
    Row(("TORCH_CUDA_ARCH_LIST",), "drop", "builder sets the archs it plans (--arch)"),
    Row(("MAX_JOBS", "CMAKE_BUILD_PARALLEL_LEVEL", "MAKEFLAGS"), "drop",
        "builder sets the job count (--jobs); it cannot change the binary"),
    Row(("NVCC_THREADS",), "drop", "flash-attn's nvcc --threads: the recipe's [build] nvcc_threads sets it"),
    Row(("PYTORCH_NVCC",), "drop", "builder runs nvcc through its compile gate (and sccache with --ccache)"),
    Row(("SOURCE_DATE_EPOCH",), "drop", "builder sets a fixed one, so rebuilds are reproducible"),
    Row(("LD_LIBRARY_PATH", "LD_PRELOAD"), "drop",
        "changes which libraries the compilers and the build's Python load; builds do not need yours (torch's "
        "wheels carry their library paths, and builder adds the CUDA libraries a make or CMake build links) "
        "and its machine-specific paths would split the cache key"),
    Row(("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONNOUSERSITE"), "drop",
        "changes what the build's Python imports (another torch, another setuptools)"),
    Row(("VIRTUAL_ENV", "CONDA_PREFIX"), "drop", "the build runs its interpreter by path; some setup.py files "
                                                 "look for CUDA or libraries under these"),
    Row(("TORCH_*",), "drop", "torch's build switches: builder sets the ones a build needs"),
    Row(("NVCC_*",), "drop", "nvcc settings other than NVCC_APPEND_FLAGS / NVCC_PREPEND_FLAGS"),
    Row(("CMAKE_*", "SKBUILD_*"), "drop", "CMake and scikit-build-core settings (CMAKE_ARGS is kept, in the key)"),
    Row(("PIP_*", "UV_*"), "drop", "pip and uv options other than index, mirror, certificates and cache "
                                   "(config settings and build options change how a package is built)"),
    Row(("CCACHE_*", "SCCACHE_*"), "drop", "compiler caches: --ccache and compile-cache give the build an sccache "
                                           "of its own"),
    Row(("SETUPTOOLS_*", "DISTUTILS_*", "_PYTHON_*"), "drop", "setuptools' and distutils' build switches"),
)


def _index() -> tuple[dict[str, Row], list[tuple[str, Row]]]:
    exact: dict[str, Row] = {}
    prefixes: list[tuple[str, Row]] = []
    for row in TABLE:
        for name in row.names:
            if name.endswith("*"):
                prefixes.append((name[:-1], row))
            else:
                exact[name] = row
    prefixes.sort(key=lambda item: -len(item[0]))
    return exact, prefixes


_EXACT, _PREFIXES = _index()


def row_for(name: str) -> Row | None:
    """The table's row for variable `name`: exact name first, then the longest prefix."""
    if name in _EXACT:
        return _EXACT[name]
    return next((row for prefix, row in _PREFIXES if name.startswith(prefix)), None)


@dataclass(frozen=True)
class Inherited:
    """What a build takes from the user's environment, decided once by `select`."""

    passed: Mapping[str, str] = field(default_factory=dict)
    """PASS rows the user set: given to the build as they are, not in the key."""
    keyed: Mapping[str, str] = field(default_factory=dict)
    """KEY rows the user set (and the plan does not set itself): given to the build, in the key."""
    dropped: Mapping[str, str] = field(default_factory=dict)
    """Variables a build would read that it does not get, each with the reason."""
    ignored: int = 0
    """How many other variables were dropped (not in the table: builds never read them)."""

    def for_build(self) -> dict[str, str]:
        """The inherited part of the build's environment (the plan's variables go on top)."""
        return {**self.passed, **self.keyed}

    def to_json(self) -> dict[str, Any]:
        """For `builder plan --json` and the cache entry: values only of the keyed variables
        (passed ones can hold credentials, e.g. a proxy URL)."""
        return {"in_key": dict(self.keyed), "passed": sorted(self.passed), "dropped": dict(self.dropped),
                "ignored": self.ignored}


# What GNU make puts in MAKEFLAGS for the commands a Makefile runs, when it only says how make
# itself prints and runs jobs (make 4.3: `make -j2 -s` gives "s -j2 --jobserver-auth=3,4"; a
# variable given on make's command line comes after " -- "). Dropped without a note under make:
# every build a Makefile starts would note it, and none of it was meant for the build.
_MAKE_OUTPUT_LETTERS = frozenset("sw")
_MAKE_OWN_OPTIONS = re.compile(r"-j\d*|-l[\d.]*|-O\w*|--output-sync(=\w+)?|--jobserver-(auth|fds)=\S+|"
                               r"-w|-s|--(no-)?print-directory|--silent|--quiet")


def from_make_itself(name: str, value: str, environ: Mapping[str, str]) -> bool:
    """Whether `name` is the MAKEFLAGS a running make (MAKELEVEL set) passes down holding only its
    own output and job flags: a build would lose nothing the user meant for it."""
    if name != "MAKEFLAGS" or "MAKELEVEL" not in environ:
        return False
    words = value.split()
    if "--" in words:  # variables given on make's command line follow it
        return False
    if words and not words[0].startswith("-"):
        if not set(words[0]) <= _MAKE_OUTPUT_LETTERS:
            return False
        words = words[1:]
    return all(_MAKE_OWN_OPTIONS.fullmatch(word) for word in words)


def select(environ: Mapping[str, str], plan_sets: Collection[str]) -> Inherited:
    """Apply the table to the user's `environ`. `plan_sets` are the variables the plan gives values
    of its own (not PATH, which it composes from the user's): the user's values of those are
    dropped and noted, whatever their row."""
    passed: dict[str, str] = {}
    keyed: dict[str, str] = {}
    dropped: dict[str, str] = {}
    ignored = 0
    for name, value in sorted(environ.items()):
        row = row_for(name)
        if name in plan_sets:
            dropped[name] = "builder sets it (see env)"
        elif row is None or from_make_itself(name, value, environ):
            ignored += 1
        elif row.kind == "pass":
            passed[name] = value
        elif row.kind == "key":
            keyed[name] = value
        else:
            dropped[name] = row.why
    return Inherited(passed=passed, keyed=keyed, dropped=dropped, ignored=ignored)


def rows(kind: Kind) -> Iterator[Row]:
    """The table's rows of one kind, in order."""
    return (row for row in TABLE if row.kind == kind)


def markdown_table() -> str:
    """The table as the README shows it (a test checks the README holds exactly this)."""
    shown = {"pass": "passed", "key": "**in the key**", "drop": "dropped, noted"}
    lines = ["| variables | the build gets | why |", "| --- | --- | --- |"]
    lines += [f"| {', '.join(f'`{name}`' for name in row.names)} | {shown[row.kind]} | {row.why} |" for row in TABLE]
    return "\n".join(lines)
