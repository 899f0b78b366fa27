"""The settings cascade (unit): defaults < config file < environment < command line, each value's
origin, and one clear error for a bad key or value; `builder config` shows the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.errors import SettingsError, UsageError
from builder.settings import SETTINGS, Settings, load_settings
from tests.conftest import run_builder


def config(tmp_path: Path, text: str) -> dict[str, str]:
    """An environment whose config file holds `text` (and no BUILDER_* variables of the user's)."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"BUILDER_CONFIG": str(path), "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}


def test_defaults_come_from_platformdirs(tmp_path: Path) -> None:
    settings = load_settings(environ={"XDG_CACHE_HOME": str(tmp_path / "xdg"), "BUILDER_CONFIG": os.devnull})
    # platformdirs reads XDG_CACHE_HOME from the process environment, which the tests do not change:
    assert settings.cache_dir.name == "builder"
    assert settings.origins == {}
    assert settings.jobs is None and settings.archs == () and settings.ccache is False


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    env = config(tmp_path, 'cache-dir = "/from/config"\njobs = 3\narchs = ["86"]\nccache = true\n')
    settings = load_settings(environ=env)
    assert (settings.cache_dir, settings.jobs) == (Path("/from/config"), 3)
    assert (settings.archs, settings.ccache) == (("86",), True)
    assert settings.origins["jobs"] == f"config file {tmp_path / 'config.toml'}"

    env |= {"BUILDER_CACHE_DIR": "/from/env", "BUILDER_JOBS": "5"}
    settings = load_settings(environ=env)
    assert (settings.cache_dir, settings.jobs) == (Path("/from/env"), 5)
    assert settings.origins["cache-dir"] == "environment variable BUILDER_CACHE_DIR"

    settings = load_settings({"cache-dir": "/from/cli", "jobs": 7, "archs": ["8.0,9.0"]}, environ=env)
    assert (settings.cache_dir, settings.jobs, settings.archs) == (Path("/from/cli"), 7, ("80", "90"))
    assert settings.origins["jobs"] == "command line --jobs"
    assert settings.ccache is True  # untouched layers show through


def test_max_jobs_is_read_as_the_jobs_cap_below_builder_jobs(tmp_path: Path) -> None:
    env = config(tmp_path, "")
    assert load_settings(environ={**env, "MAX_JOBS": "1"}).origins["jobs"] == "environment variable MAX_JOBS"
    settings = load_settings(environ={**env, "MAX_JOBS": "1", "BUILDER_JOBS": "4"})
    assert settings.jobs == 4 and settings.origins["jobs"] == "environment variable BUILDER_JOBS"


def test_recipe_path_and_url_mirrors_from_variables(tmp_path: Path) -> None:
    env = config(tmp_path, "") | {
        "BUILDER_RECIPE_PATH": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
        "BUILDER_URL_MIRRORS": "https://github.com/=http://127.0.0.1:9/gh/ https://x/=https://y/"}
    settings = load_settings(environ=env)
    assert settings.recipe_path == (tmp_path / "a", tmp_path / "b")
    assert settings.mirrored("https://github.com/o/r/archive/v1.tar.gz") == "http://127.0.0.1:9/gh/o/r/archive/v1.tar.gz"
    assert settings.mirrored("https://pypi.org/x") == "https://pypi.org/x"


def test_relative_paths_are_made_absolute_where_builder_starts(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`--cache cache` (as the generated CI passes it) names ./cache, also for tools run elsewhere."""
    monkeypatch.chdir(tmp_path)
    env = config(tmp_path, "") | {"BUILDER_RECIPE_PATH": "mine"}
    settings = load_settings({"cache-dir": "cache"}, environ=env)
    assert (settings.cache_dir, settings.recipe_path) == (tmp_path / "cache", (tmp_path / "mine",))


def test_index_url_cascade(tmp_path: Path) -> None:
    env = config(tmp_path, 'index-url = "https://config.example/simple"\n')
    assert load_settings(environ=env).source_index == "https://config.example/simple"
    env["PIP_INDEX_URL"] = "https://pip.example/simple"
    assert load_settings(environ=env).source_index == "https://pip.example/simple"
    env["BUILDER_INDEX_URL"] = "https://builder.example/simple"
    assert load_settings(environ=env).source_index == "https://builder.example/simple"


@pytest.mark.parametrize(("text", "message"), [
    ("cache_dir = '/x'\n", "unknown key 'cache_dir' (did you mean 'cache-dir'?)"),
    ("jobs = 'many'\n", "jobs = 'many': expected a whole number of at least 1"),
    ("jobs = 0\n", "jobs = 0: expected a whole number"),
    ("memory-budget = -2\n", "expected a positive number"),
    ("ccache = 'maybe'\n", "expected true or false"),
    ("archs = ['ampere']\n", "malformed arch 'ampere'"),
    ("url-mirrors = ['x']\n", "expected a table of URL prefixes"),
    ("jobs = \n", "not valid TOML"),
])
def test_a_bad_config_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=r"config\.toml") as caught:
        load_settings(environ=config(tmp_path, text))
    assert message in caught.value.message


def test_bad_variables_and_options_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="environment variable BUILDER_JOBS: jobs = 'x'"):
        load_settings(environ=config(tmp_path, "") | {"BUILDER_JOBS": "x"})
    with pytest.raises(UsageError, match="--memory-budget '0'"):
        load_settings({"memory-budget": "0"}, environ=config(tmp_path, ""))


def test_the_table_and_the_settings_fields_agree() -> None:
    names = {setting.attribute for setting in SETTINGS}
    assert names == set(Settings.__dataclass_fields__) - {"origins", "config_file", "environ"}


def test_builder_config_prints_values_and_origins(tmp_path: Path) -> None:
    env = config(tmp_path, "jobs = 2\n") | {"BUILDER_CACHE_URL": str(tmp_path / "shared")}
    result = run_builder("config", "--cache", str(tmp_path / "c"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["settings"]}
    assert rows["jobs"]["value"] == 2 and rows["jobs"]["origin"].startswith("config file")
    assert rows["cache-url"]["origin"] == "environment variable BUILDER_CACHE_URL"
    assert rows["cache-dir"] == {**rows["cache-dir"], "value": str(tmp_path / "c"), "origin": "command line --cache"}
    assert rows["jobs"]["unset"] is None and rows["memory-budget"]["unset"] == "80% of the memory available"
    text = run_builder("config", env=env)
    assert "jobs" in text.stdout and "config file" in text.stdout
    assert "(80% of the memory available)" in text.stdout  # what an empty value does, not a blank cell


def test_a_bad_config_file_stops_every_command_with_one_line(tmp_path: Path) -> None:
    result = run_builder("recipes", env=config(tmp_path, "jbos = 2\n"))
    assert result.returncode == SettingsError.exit_code
    assert "unknown key 'jbos' (did you mean 'jobs'?)" in result.stderr and "Traceback" not in result.stderr


def test_a_config_file_in_another_encoding_is_one_line_and_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    env = config(tmp_path, "")
    Path(env["BUILDER_CONFIG"]).write_bytes("jobs = 2 # café\n".encode("latin-1"))
    result = run_builder("config", "--json", env=env)
    assert result.returncode == SettingsError.exit_code and "Traceback" not in result.stderr
    assert "not valid TOML: 'utf-8' codec can't decode" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == SettingsError.exit_code
    Path(env["BUILDER_CONFIG"]).write_bytes(b"\xef\xbb\xbfjobs = 2\n")  # as Notepad saves UTF-8
    assert load_settings(environ=env).jobs == 2
