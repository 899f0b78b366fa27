"""builder's settings, resolved once in one cascade (cibuildwheel's model), lowest first:

  1. defaults                                   (the `default` of each row of SETTINGS)
  2. the user config file                       (<user config dir>/builder/config.toml, or BUILDER_CONFIG)
  3. environment variables                      (BUILDER_*, and the few others a row names)
  4. the command line                           (the flags a row names)

`load_settings` returns frozen Settings with the origin of every value; nothing downstream reads
the config file or these variables again. `builder config` prints each value and where it came
from. An unknown key or a value of the wrong type is one SettingsError naming the file or variable.
An index-url that no layer sets follows pip's own configuration (builder/pip_config.py), read only
when something needs it.

The config file is TOML with the settings' names as keys:

    cache-dir = "~/big-disk/builder"
    cache-url = "s3://team-wheels/builder"
    archs = ["86", "90"]
    jobs = 8
    memory-budget = 40
    compile-cache = "auto"
    split-compile = false
    index-url = "https://mirrors.example.org/pypi/simple"
    url-mirrors = { "https://github.com/" = "https://ghproxy.example.org/https://github.com/" }
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import platformdirs

from builder.errors import BuilderError, SettingsError, UsageError
from builder.index_client import PYPI_SIMPLE
from builder.pip_config import PipSetting, pip_setting
from builder.planning.archs import parse_archs
from builder.planning.compile_cache import parse_setting as parse_compile_cache
from builder.tables import check_keys

APP = "builder"
DEFAULT_BUILD_DIR = "/var/tmp/builder-build"
"""Not under the cache: a path every machine can have (FHS: /var/tmp survives reboots, unlike a tmpfs /tmp)."""



def _path(value: Any) -> Path:
    """A path made absolute against the directory builder starts in: the build runs its tools in
    other directories, where a relative one (`--cache cache`) would name another folder."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError("expected a path")
    return Path(os.path.abspath(Path(value).expanduser()))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _positive_int(value: Any) -> int:
    number = int(value) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def _positive_float(value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise ValueError("expected a positive number")
    return number


def _farm_url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError("expected the scheduler's http(s)://host:port URL")
    return text.rstrip("/")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false (1/0, yes/no)")


def _paths(value: Any) -> tuple[Path, ...]:
    """A list of folders; from a variable, an os.pathsep-separated list (like PATH)."""
    items = value.split(os.pathsep) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected a list of folders")
    return tuple(_path(item) for item in items if str(item))


def _archs(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, int)) for i in items):
        raise ValueError("expected archs like [\"86\", \"90\"]")
    return tuple(str(arch) for arch in parse_archs(str(i) for i in items))


def _mirrors(value: Any) -> tuple[tuple[str, str], ...]:
    """URL prefix rewrites; from a variable, `FROM=TO` pairs separated by spaces."""
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("expected FROM=TO pairs separated by spaces")
        value = dict(pairs)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                              for k, v in value.items()):
        raise ValueError('expected a table of URL prefixes, e.g. { "https://github.com/" = "https://mirror/gh/" }')
    return tuple(value.items())


@dataclass(frozen=True)
class Setting:
    """One row of the cascade: its name (the config file's key), how a value is read, where it may
    come from and what it means."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    env: tuple[str, ...] = ()
    """Variables that set it, the first set one winning."""
    flag: str | None = None
    """The command-line option that sets it (its value arrives already parsed by argparse)."""
    default: Callable[[], Any] = lambda: None
    unset: str = ""
    """What the setting does when nothing sets it and its default is empty (`builder config` shows it)."""

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")

    @property
    def described(self) -> str:
        return f"{self.help} (default: {self.unset})" if self.unset else self.help


SETTINGS: tuple[Setting, ...] = (
    Setting("cache-dir", _path, "the local cache: built wheels, sources, logs, build envs, toolchains",
            env=("BUILDER_CACHE_DIR",), flag="--cache",
            default=lambda: Path(platformdirs.user_cache_dir(APP))),
    Setting("cache-url", _text, "a shared cache (directory, s3://bucket/prefix, http(s)://...) looked up before "
            "building and uploaded to after", env=("BUILDER_CACHE_URL",), flag="--cache-url", unset="none"),
    Setting("build-dir", _path, "where builds compile, each in <build-dir>/<cache key>, removed after success. "
            "nvcc hashes each source file's absolute path into the names of internal-linkage entities, so two "
            "builds of one key are byte-identical only at the same path: keep it equal on the machines that "
            "share a cache", env=("BUILDER_BUILD_DIR",), default=lambda: Path(DEFAULT_BUILD_DIR)),
    Setting("recipe-path", _paths, "folders of your own recipes, searched before the shipped ones",
            env=("BUILDER_RECIPE_PATH",), default=tuple, unset="the shipped recipes alone"),
    Setting("archs", _archs, "GPU archs to build for when --arch is not given",
            env=("BUILDER_ARCHS",), flag="--arch", default=tuple, unset="the visible GPUs"),
    Setting("jobs", _positive_int, "the most compile jobs at once (MAX_JOBS, as torch's builds read it, is "
            "honoured as this cap)", env=("BUILDER_JOBS", "MAX_JOBS"), flag="--jobs",
            unset="one per core, as the memory budget allows"),
    Setting("memory-budget", _positive_float, "GB the running compiles may use together",
            env=("BUILDER_MEMORY_BUDGET",), flag="--memory-budget", unset="80% of the memory available"),
    Setting("ccache", _bool, "compile through sccache", env=("BUILDER_CCACHE",), flag="--ccache",
            default=lambda: False),
    Setting("compile-cache", parse_compile_cache, "where builds keep compiled steps, shared across keys, cells "
            "and machines (implies ccache): a directory, s3://bucket/prefix, or auto (compile/ beside the "
            "cache-url's wheels); it changes no output, so it is not in the cache key",
            env=("BUILDER_COMPILE_CACHE",), flag="--compile-cache",
            unset="none; with ccache, the local cache's sccache/"),
    Setting("farm", _farm_url, "a build farm: the URL of its sccache-dist scheduler (`builder farm scheduler`); "
            "builds compile their device steps on its servers and size their jobs by its CPUs (implies ccache; "
            "not in the cache key)", env=("BUILDER_FARM",), flag="--farm", unset="none: compile here"),
    Setting("farm-token", _text, "the farm's client token; from the variable or the config file, never an "
            "option (the command line is visible to every user of the machine)", env=("BUILDER_FARM_TOKEN",),
            unset="none"),
    Setting("farm-token-file", _path, "a file holding the farm's client token (used when farm-token is unset)",
            env=("BUILDER_FARM_TOKEN_FILE",), unset="none"),
    Setting("split-compile", _bool, "let the compile gate split a long nvcc compile over idle cores "
            "(nvcc --split-compile) where the toolkit's nvcc has it", env=("BUILDER_SPLIT_COMPILE",),
            flag="--no-split-compile", default=lambda: True),
    Setting("torch-index", _text, "the index --torch takes torch from",
            env=("BUILDER_TORCH_INDEX",), flag="--torch-index",
            unset="index-url's, where its torch has --cuda's major, else PyTorch's per-CUDA index"),
    Setting("index-url", _text, "the package index source downloads and --torch build environments use "
            "(default: the index-url of pip's configuration, else PyPI)",
            env=("BUILDER_INDEX_URL", "PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL"), flag="--index-url"),
    Setting("url-mirrors", _mirrors, "URL prefixes rewritten for downloads of URL sources (GitHub archives), "
            "e.g. through a mirror; the sha256 check stays", env=("BUILDER_URL_MIRRORS",), default=tuple,
            unset="none"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
SECRET_SETTINGS = frozenset({"farm-token"})
"""Settings whose value `builder config` never prints."""


@dataclass(frozen=True)
class Settings:
    """The effective settings; `origins` says where each came from."""

    cache_dir: Path
    cache_url: str | None
    build_dir: Path
    recipe_path: tuple[Path, ...]
    archs: tuple[str, ...]
    jobs: int | None
    memory_budget: float | None
    ccache: bool
    compile_cache: str | None
    farm: str | None
    farm_token: str | None = field(repr=False)
    farm_token_file: Path | None
    split_compile: bool
    torch_index: str | None
    index_url: str | None
    """None: pip's configured index (`source_index`)."""
    url_mirrors: tuple[tuple[str, str], ...]
    origins: Mapping[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    environ: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    """The environment the settings were read from; pip's configuration is read in it too (None:
    this process's)."""

    @cached_property
    def source_index(self) -> str:
        """The index source downloads and build environments use: the index-url setting, else the
        index-url of pip's configuration, else PyPI."""
        if self.index_url:
            return self.index_url
        return self._pip_index.value if self._pip_index else PYPI_SIMPLE

    @cached_property
    def _pip_index(self) -> PipSetting | None:
        """pip's configured index-url (`pip config debug` runs only when the setting leaves it open)."""
        return None if self.index_url else pip_setting("index-url", self.environ)

    def mirrored(self, url: str) -> str:
        """`url` through the first url-mirrors prefix that matches it."""
        for prefix, replacement in self.url_mirrors:
            if url.startswith(prefix):
                return replacement + url[len(prefix):]
        return url

    def describe(self) -> list[dict[str, Any]]:
        """Each setting's value and origin, in the order of SETTINGS (what `builder config` prints)."""
        rows = []
        for setting in SETTINGS:
            value = getattr(self, setting.attribute)
            origin = self.origins.get(setting.name, "default")
            if setting.name == "index-url" and value is None:
                value = self.source_index
                origin = f"pip's configuration ({self._pip_index.where})" if self._pip_index else "default"
            shown = "(set, not shown)" if setting.name in SECRET_SETTINGS and value else _shown(value)
            rows.append({"name": setting.name, "value": shown, "origin": origin, "help": setting.described,
                         "unset": setting.unset if value in (None, ()) else None})
        return rows


def _shown(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_shown(v) if not isinstance(v, tuple) else list(v) for v in value]
    return value


def config_path(environ: Mapping[str, str]) -> Path:
    """The user config file: BUILDER_CONFIG, else <user config dir>/builder/config.toml."""
    if environ.get("BUILDER_CONFIG"):
        return Path(environ["BUILDER_CONFIG"]).expanduser()
    return default_config_path()


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def read_config(path: Path, *, named: bool = False) -> dict[str, Any]:
    """The config file's table (empty when there is none), keys checked; a file BUILDER_CONFIG
    names (`named`) must exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if named:
            raise SettingsError(f"BUILDER_CONFIG names {path}, which does not exist",
                                hint=f"create it, or unset BUILDER_CONFIG to read {default_config_path()}") from None
        return {}
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:  # TOML is UTF-8; a byte order mark some editors write is skipped
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    check_keys(data, BY_NAME, str(path), SettingsError)
    return data


def _parsed(setting: Setting, value: Any, where: str, error: type[BuilderError] = SettingsError) -> Any:
    """The value read; a bad one is `error` naming where it came from."""
    try:
        return setting.parse(value)
    except BuilderError as exc:
        raise error(f"{where}: {exc.message}", hint=exc.hint) from None
    except (ValueError, TypeError) as exc:
        shown = f"{where} {value!r}" if where.startswith("--") else f"{where}: {setting.name} = {value!r}"
        raise error(f"{shown}: {exc}", hint=f"{setting.name}: {setting.described}") from None


def load_settings(command_line: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting once: defaults, config file, environment, command line.

    `command_line` maps setting names to values the CLI was given (None or absent: not given).
    """
    env = os.environ if environ is None else environ
    path = config_path(env)
    config = read_config(path, named=bool(env.get("BUILDER_CONFIG")))
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for setting in SETTINGS:
        values[setting.attribute] = setting.default()
        if setting.name in config:
            values[setting.attribute] = _parsed(setting, config[setting.name], str(path))
            origins[setting.name] = f"config file {path}"
        for variable in setting.env:
            if env.get(variable):
                values[setting.attribute] = _parsed(setting, env[variable], f"environment variable {variable}")
                origins[setting.name] = f"environment variable {variable}"
                break
        given = (command_line or {}).get(setting.name)
        if given not in (None, (), [], False):
            values[setting.attribute] = _parsed(setting, given, str(setting.flag), UsageError)
            origins[setting.name] = f"command line {setting.flag}"
    return Settings(**values, origins=origins, config_file=path, environ=dict(env))
