"""The command line's grammar: every command, its options and its help.

Options that are settings (--cache, --cache-url, --arch, --jobs, --memory-budget, --ccache,
--no-split-compile, --torch-index, --index-url) are the last layer of the settings cascade (builder/settings.py): they
default to None here so that the config file and BUILDER_* variables show through.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

import platformdirs

from builder import __version__
from builder.errors import UsageError
from builder.fleet.ci_github import DEFAULT_CACHE_URL
from builder.fleet.farm import DEFAULT_SCHEDULER_ADDR
from builder.settings import BY_NAME

EPILOG = """examples:
  builder build causal-conv1d --arch 86           build for sm_86 against this Python's torch
  builder build flash-attn --cuda 11.8 --arch 86 --torch 2.0.1
  builder plan flash-attn --arch 8.0,9.0 --json   show what a build would do
  builder cache list                              what the cache holds
  ROOT=$(builder index-url) && pip install --only-binary flash-attn --index-url "$ROOT" \\
      --extra-index-url https://pypi.org/simple flash-attn
                                                  the cached build that loads here, else none
  builder recipe check                            releases upstream has that the recipes do not
  builder config                                  every setting, its value and where it came from

settings: defaults < config file (builder config shows where) < BUILDER_* variables < options
"""

# The settings each command's options feed: setting name -> argparse dest.
SETTING_OPTIONS = {"cache-dir": "cache", "cache-url": "cache_url", "archs": "arch", "jobs": "jobs",
                   "memory-budget": "memory_budget", "ccache": "ccache", "compile-cache": "compile_cache",
                   "farm": "farm", "split-compile": "no_split_compile",
                   "torch-index": "torch_index",
                   "index-url": "index_url"}


def unset_of(setting: str) -> str:
    """What a setting does when nothing sets it (builder/settings.py, one place), for a help text."""
    return BY_NAME[setting].unset.replace("%", "%%")


def command_line_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave (absent or None: not given)."""
    return {name: getattr(args, dest) for name, dest in SETTING_OPTIONS.items() if getattr(args, dest, None)}


def _add_target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name (see `builder recipes`) or path to a .toml")
    parser.add_argument("--version", dest="pkg_version",
                        help="package version (default: the recipe's default, else the newest whose requirements "
                             "the target meets; the plan says which it skipped)")
    parser.add_argument("--cuda", help="CUDA toolkit X.Y to compile with, or X for the newest X.y found "
                                       "(default: torch's CUDA)")
    parser.add_argument("--arch", action="append", default=[],
                        help="GPU arch: 86, 8.6, sm_86, 8.6+PTX; repeat or join with , or ; "
                             f"(default: the archs setting, else {unset_of('archs')})")
    parser.add_argument("--torch", help="build in a venv with exactly this torch version")
    parser.add_argument("--torch-index", help="index URL to get that torch from (e.g. a per-CUDA index)")
    parser.add_argument("--python", help="target interpreter (default: the one running builder)")
    parser.add_argument("--cxx11-abi", default="auto", choices=("auto", "0", "1"),
                        help="C++ ABI; must match torch's (default: auto)")
    parser.add_argument("--jobs",
                        help="at most this many compile jobs (default: one per core where builder's compile gate "
                             "keeps the memory budget, else from cores and free RAM; MAX_JOBS caps it too)")
    parser.add_argument("--memory-budget", metavar="GB",
                        help="memory the running compiles may be expected to use together; each compile is "
                             "admitted only while its expected peak (from the last build's records, else the "
                             f"recipe's estimate) fits (default: {unset_of('memory-budget')})")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE",
                        help="a choice of one of the recipe's declared variants, e.g. hdims=64,128 (`builder "
                             "recipes` lists them); repeat for several")
    parser.add_argument("--source", help="local archive or directory to use instead of the recipe's URL")
    parser.add_argument("--ccache", action="store_true", default=None,
                        help="compile through builder's own sccache (its store: the compile-cache setting, else "
                             "the local cache's sccache/)")
    parser.add_argument("--compile-cache", metavar="WHERE",
                        help="keep compiled steps where other builds, matrix cells and machines find them: a "
                             "directory, s3://bucket/prefix (AWS variables as for --cache-url), or auto (compile/ "
                             "beside the --cache-url wheels); implies --ccache; not in the cache key")
    parser.add_argument("--farm", metavar="URL",
                        help="compile the device steps on a build farm: its sccache-dist scheduler's URL; the "
                             "token comes from BUILDER_FARM_TOKEN or farm-token-file, never an option; implies "
                             "--ccache; not in the cache key")
    # The split-compile setting's value "off" (the cascade reads it like the config file's false).
    parser.add_argument("--no-split-compile", action="store_const", const="off", default=None,
                        help="never split one file's nvcc compile over several threads (default: the compile gate "
                             "does it for a long file while cores would sit idle, where nvcc has --split-compile)")
    parser.add_argument("--provision", action="store_true",
                        help="install the CUDA toolkit for --cuda when none is found (see `builder toolchain`)")
    parser.add_argument("--cache-url", help="shared cache (a directory, s3://bucket/prefix or http(s)://...): looked "
                                            "up before building, uploaded to after (default: the cache-url setting)")
    _add_index_url(parser, "source downloads and --torch build environments")


def _add_index_url(parser: argparse.ArgumentParser, used_for: str) -> None:
    """The index-url setting's option: the last layer of its cascade, for this command."""
    parser.add_argument("-i", "--index-url", help=f"package index for {used_for}, for this command, as pip's -i "
                        "(default: the index-url setting, else pip's configured index)")


def _add_matrix_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matrix-file", type=Path, help="a TOML file with a [matrix] table (see README)")
    for axis, text in (("recipe", "recipe names"), ("version", "package versions (default: each recipe's)"),
                       ("python", "Python X.Y"), ("torch", "torch versions"), ("cuda", "CUDA X.Y"),
                       ("arch", "GPU archs")):
        parser.add_argument(f"--{axis}", dest=f"axis_{axis}", action="append", default=[],
                            help=f"{text}; repeat or join with commas")


def _add_install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--install-mode", choices=("auto", "wheel", "artifacts"), default="auto",
                        help="wheel: pip install; artifacts: only the built libraries, into the package the "
                             "target already has (bitsandbytes) or --install-dir; auto: artifacts where the "
                             "recipe installs them and the target has the package, else wheel")
    parser.add_argument("--no-companions", action="store_true",
                        help="drop the requirements the recipe would satisfy with builder's own build of "
                             "another recipe (autoawq: autoawq-kernels) instead of building it first")


def port(text: str) -> int:
    """A TCP port: a whole number from 0 to 65535 (argparse's type: a bad one is a usage error)."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a whole number from 0 to 65535 "
                                         "(0 picks a free one)")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors (an unknown option, a missing value: `--arch -5`) are builder's
    one-line UsageError, not argparse's usage block and exit; the subcommands' parsers are of this
    class too (argparse makes them with type(parser))."""

    def error(self, message: str) -> NoReturn:
        dash = "; a value that starts with '-' is written --option=VALUE" if "expected one argument" in message else ""
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`{dash}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="builder", description="Compile CUDA extensions (flash-attn, causal-conv1d, ...) "
        "against a pinned torch, CUDA toolkit and GPU arch; cache, install and verify the wheel.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    # `builder build X --version V` stays the package's version: the subcommand's parser gets the
    # arguments after its name, this option included.
    parser.add_argument("-V", "--version", "--builder-version", action="version", version=f"builder {__version__}")
    common = Parser(add_help=False)
    common.add_argument("--cache", type=Path, help="cache root (default: the cache-dir setting, else "
                        f"{platformdirs.user_cache_dir('builder')})")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = sub.add_parser("build", parents=[common], help="build, cache, install and verify a recipe")
    _add_target_args(build)
    build.add_argument("--no-install", action="store_true", help="build and cache only")
    _add_install_options(build)
    build.add_argument("--install-dir", help="where artifacts go (default: the target's installed package, or a "
                                             "--source directory that holds the recipe's marker file, e.g. a "
                                             "model's quantization.py)")
    build.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    build.add_argument("--check", action="store_true",
                       help="rebuild a cached build in a fresh work directory and compare the two wheels file by "
                            "file (for a shared object: which ELF sections); stores and installs nothing; exit 1 "
                            "when they differ")

    plan = sub.add_parser("plan", parents=[common], help="show what a build would do; builds nothing")
    _add_target_args(plan)
    _add_install_options(plan)

    sub.add_parser("recipes", parents=[common], help="list recipes, versions, backends and where each comes from")
    sub.add_parser("config", parents=[common], help="every setting's value and where it came from")

    fetch_cmd = sub.add_parser("fetch", parents=[common], help="download a recipe's sources for offline use")
    fetch_cmd.add_argument("recipe", help="recipe name or .toml path")
    fetch_cmd.add_argument("--version", dest="pkg_version", help="one version (default: all)")
    _add_index_url(fetch_cmd, "source downloads")

    _add_cache_commands(sub, common)
    _add_recipe_commands(sub, common)

    stats = sub.add_parser("stats", parents=[common],
                           help="per-file compile costs of a recipe's builds: slowest files, peak memory, core use; "
                                "on a farm, the servers that ran each file's steps")
    stats.add_argument("recipe", help="recipe name or .toml path")
    stats.add_argument("--top", type=int, default=10, help="slowest files to show (default 10)")
    stats.add_argument("--all", action="store_true", help="every recorded kind of build, not only the newest")
    stats.add_argument("--export", metavar="PATH",
                       help="add the newest build's per-file costs to a reference costs file (a recipe ships "
                            "them as costs/<recipe>-<version>.json beside it; a build with no records of its own "
                            "starts from them)")

    doctor = sub.add_parser("doctor", parents=[common], help="explain what this machine can build, and fixes")
    doctor.add_argument("--python", help="target interpreter (default: the one running builder)")

    toolchain = sub.add_parser("toolchain", help="list or install CUDA toolkits")
    toolchain_sub = toolchain.add_subparsers(dest="toolchain_command", required=True, metavar="ACTION")
    toolchain_sub.add_parser("list", parents=[common], help="toolkits found here and provisioned into the cache")
    toolchain_install = toolchain_sub.add_parser(
        "install", parents=[common], help="install CUDA 13.x from PyPI's NVIDIA wheels into the cache, "
        "or CUDA 11.8 from Debian's archive (root, apt)")
    toolchain_install.add_argument("cuda", help="CUDA version X.Y")

    _add_fleet_commands(sub, common)

    index_url = sub.add_parser("index-url", parents=[common],
                               help="print the index root listing only the builds that load in an environment "
                                    "(for pip/uv --index-url)")
    index_url.add_argument("--python", help="the interpreter the install is for (default: the one running builder)")
    index_url.add_argument("--arch", dest="gpu", help="the GPU's compute capability, e.g. 86 or 8.6 "
                                                      "(default: the visible GPU's)")
    index_url.add_argument("--server", help="a served cache (`builder cache serve`), e.g. http://host:8000 "
                                            "(default: the local cache's file tree)")
    index_url.add_argument("--variants", action="store_true",
                           help="print the variants root of the interpreter's torch instead: variant wheels "
                                "(PEP 825) among which uv --preview-features wheel-variants picks by GPU and driver")

    uninstall = sub.add_parser("uninstall", parents=[common],
                               help="undo an artifacts install: restore the files it replaced, remove the rest")
    uninstall.add_argument("recipe", help="the recipe whose libraries were installed")
    where = uninstall.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", help="the directory the libraries were installed into")
    where.add_argument("--artifacts", action="store_true",
                       help="the libraries installed into the recipe's package in --python's environment")
    uninstall.add_argument("--python", help="the interpreter whose package holds them (default: this one)")

    install = sub.add_parser("install", parents=[common], help="install a wheel file or cache entry")
    install.add_argument("wheel", help="path of a .whl, or a cache key (prefix)")
    install.add_argument("--python", help="target interpreter (default: the one running builder)")
    return parser


def _add_cache_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    cache = sub.add_parser("cache", help="inspect the wheel cache")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cache_sub.add_parser("list", parents=[common], help="list cached builds")
    for name, text in (("show", "show one entry"), ("rm", "remove one entry")):
        action = cache_sub.add_parser(name, parents=[common], help=text)
        action.add_argument("key", help="cache key or a unique prefix of one")
    gc = cache_sub.add_parser("gc", parents=[common], help="prune old entries (never ones an install still uses)")
    gc.add_argument("--keep", type=int, help="keep the newest N entries per recipe")
    gc.add_argument("--max-size", help="then remove oldest first until the cache fits, e.g. 20G")
    gc.add_argument("--build-folders", action="store_true",
                    help="also remove the folders failed or killed builds left under the build-dir setting, "
                         "untouched for a day and used by no build (they are kept for inspection)")
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    cache_sub.add_parser("verify", parents=[common], help="re-hash every wheel; quarantine corrupt entries")
    for name, text in (("push", "upload entries to a shared cache"),
                       ("pull", "download entries from a shared cache (each checked against its sha256)"),
                       ("sync", "pull what only the shared cache has, push what only this one has")):
        action = cache_sub.add_parser(name, parents=[common], help=text)
        action.add_argument("--cache-url", help="a directory, s3://bucket/prefix or http(s)://... "
                                                "(default: the cache-url setting)")
        if name != "sync":
            action.add_argument("keys", nargs="*", help="cache keys or unique prefixes (default: all)")
    serve = cache_sub.add_parser("serve", parents=[common],
                                 help="serve the cache as a PEP 503/691 index for pip, uv and --cache-url")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=port, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--matrix-file", type=Path, help="a matrix file (`builder matrix`): the page at / shows "
                                                        "which of its cells are built and which are missing")


def _add_recipe_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    recipe = sub.add_parser("recipe", help="recipes against upstream: releases they do not know, adding one")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", required=True, metavar="ACTION")
    check = recipe_sub.add_parser(
        "check", parents=[common], help="the releases on the index newer than a recipe knows, and whether its "
        "patches apply to each (patch --dry-run), its `when` ranges admit it and its build requirements changed")
    check.add_argument("recipe", nargs="?", help="recipe name or .toml path (default: every recipe)")
    check.add_argument("--version", dest="pkg_version", help="check this release only")
    check.add_argument("--source", help="the newest release's archive or directory, instead of its download "
                                        "(a GitHub tag archive where GitHub cannot be reached)")
    check.add_argument("--pre", action="store_true", help="pre-releases too")
    check.add_argument("--fail-on-new", action="store_true",
                       help="exit 1 when a recipe lacks a release of its project (the scheduled CI check)")
    _add_index_url(check, "the releases and their sources")
    add = recipe_sub.add_parser(
        "add-version", parents=[common], help="fetch a release, record its file and sha256 in the recipe, widen "
        "the `when` ranges of the patches that apply to it, report those that do not")
    add.add_argument("recipe", help="recipe name or .toml path")
    add.add_argument("version", help="the release, as the index names it")
    add.add_argument("--source", help="the release's archive (for a URL source whose host cannot be reached); "
                                      "the sha256 recorded is this file's")
    add.add_argument("--output", help="write the recipe here instead of in place (needed for a recipe outside "
                                      "your recipe-path, e.g. a shipped one)")
    add.add_argument("--default", action="store_true", help="make the release the recipe's default_version")
    _add_index_url(add, "the release and its source")


def _add_fleet_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    matrix = sub.add_parser("matrix", parents=[common],
                            help="expand a build matrix and drop impossible cells (`matrix build` runs it here)")
    _add_matrix_args(matrix)
    matrix.add_argument("--format", choices=("table", "github"), default="table",
                        help="a table, or GitHub Actions strategy.matrix values (with --json: the cells)")
    matrix_sub = matrix.add_subparsers(dest="matrix_command", metavar="ACTION")
    matrix_build = matrix_sub.add_parser("build", parents=[common], help="build the possible cells on this machine")
    _add_matrix_args(matrix_build)
    matrix_build.add_argument("--parallel", type=int, default=1,
                              help="cells at once, sharing the cores (default 1)")
    matrix_build.add_argument("--memory-budget", metavar="GB", help="GB the running cells may expect to use "
                              "(default: the memory available now)")
    matrix_build.add_argument("--cache-url", help="shared cache to look up and upload to "
                                                  "(default: the cache-url setting)")

    farm_parser = sub.add_parser("farm", help="run a build farm (sccache-dist): its scheduler, a build server, "
                                              "or ask its status")
    farm_sub = farm_parser.add_subparsers(dest="farm_command", required=True, metavar="ACTION")
    scheduler = farm_sub.add_parser("scheduler", parents=[common],
                                    help="run the farm's scheduler here (makes its tokens once, under the cache)")
    scheduler.add_argument("--listen", default=DEFAULT_SCHEDULER_ADDR, metavar="HOST:PORT",
                           help=f"address the scheduler listens on (default {DEFAULT_SCHEDULER_ADDR})")
    server = farm_sub.add_parser("server", parents=[common],
                                 help="run a build server here (root, bubblewrap), taking steps from a scheduler")
    server.add_argument("--scheduler", required=True, metavar="URL", help="the scheduler's http://host:port")
    server.add_argument("--token-file", required=True, type=Path, metavar="PATH",
                        help="a file holding the scheduler's server token (`builder farm scheduler` says where)")
    server.add_argument("--addr", required=True, metavar="HOST:PORT",
                        help="the address builds reach this server on, as the scheduler hands it out; it "
                             "listens there (e.g. 10.0.0.5:10501)")
    server.add_argument("--cores", type=int, metavar="N", help="hold the server to N cores (default: all)")
    status = farm_sub.add_parser("status", parents=[common], help="the farm's servers and CPUs, by its scheduler")
    status.add_argument("--farm", metavar="URL", help="the scheduler (default: the farm setting)")

    ci = sub.add_parser("ci", help="write CI configuration")
    ci_sub = ci.add_subparsers(dest="ci_command", required=True, metavar="SYSTEM")
    github = ci_sub.add_parser("github", parents=[common],
                               help="a GitHub Actions workflow building the matrix on self-hosted GPU runners")
    _add_matrix_args(github)
    github.add_argument("--output", type=Path, default=Path(".github/workflows/builder-matrix.yml"),
                        help="where to write it (default: .github/workflows/builder-matrix.yml); recipe paths and "
                             "recipe-path folders are written relative to the git repository holding it (else the "
                             "current directory's), and refused outside it")
    github.add_argument("--runner-label", action="append", default=[],
                        help="runs-on label, repeatable (default: self-hosted, linux, gpu)")
    github.add_argument("--builder-source", metavar="SOURCE",
                        help="where the jobs pip-install builder from (the s3 extra is added): a pinned git URL "
                             "(git+https://github.com/ORG/builder@<commit>), a wheel URL, a requirement "
                             "(builder==0.1.0) from the runners' index, or `.` (builder's own repository). "
                             "Default: `.` in builder's own repository, else where this builder was installed "
                             "from (a git URL pinned to its commit, a wheel URL), else builder==<this version> "
                             "(pass a git or wheel URL when builder is not on the runners' index)")
    github.add_argument("--cache-url-expr", default=DEFAULT_CACHE_URL,
                        help="the --cache-url each job uses (default: the BUILDER_CACHE_URL secret)")
