"""Property tests (hypothesis): whatever a user writes, the recipe loader, the arch parser and the
CLI's values answer with builder's own error (one line), never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from builder.cli import main
from builder.errors import RecipeError, UsageError
from builder.planning.archs import parse_archs
from builder.planning.recipe import parse_recipe
from builder.planning.recipe_schema import recipe_schema
from tests.conftest import TORCHEXT


def _schema_keys() -> list[str]:
    schema = recipe_schema()
    return sorted({key for table in (schema, *schema["$defs"].values()) for key in table["properties"]})


KEYS = st.sampled_from(_schema_keys()) | st.text(max_size=8)
SCALARS = (st.text(max_size=12) | st.sampled_from(["1.0", ">=2.2", "{archs}", "{", "80", "torch", "x.patch"])
           | st.integers(-3, 300) | st.floats(allow_nan=False) | st.booleans())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)
VALID: dict[str, Any] = {
    "name": "r", "backend": "torch-ext", "default_version": "1.0", "description": "d",
    "versions": {"1.0": {"source": {"path": str(TORCHEXT)}, "requires": {"torch": ">=2"}}},
    "requires": {"cuda": ">=11", "archs": ["80"]}, "build": {"env": {"X": "{archs}"}, "job_memory_gb": 2},
    "deps": {"drop": ["torch"]}, "verify": {"imports": ["x"]},
    "variants": {"v": {"choices": ["a", "b"], "env": {"V": "{value}"}}},
}


@st.composite
def mutated_recipes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid recipe with one table somewhere replaced, extended or emptied."""
    data = copy.deepcopy(VALID)
    table: dict[str, Any] = data
    while True:
        tables = [key for key, value in table.items() if isinstance(value, dict)]
        if not tables or draw(st.booleans()):
            break
        table = table[draw(st.sampled_from(tables))]
    action = draw(st.sampled_from(["set", "delete"]))
    key = draw(KEYS if action == "set" else st.sampled_from(sorted(table) or [""]))
    if action == "set":
        table[key] = draw(VALUES)
    else:
        table.pop(key, None)
    return data


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=8) | mutated_recipes())
def test_the_recipe_loader_refuses_with_a_recipe_error_only(data: dict[str, Any]) -> None:
    try:
        parse_recipe(data, Path(TORCHEXT.parent / "r.toml"))
    except RecipeError as exc:
        assert exc.message.startswith("r.toml: ") and "\n" not in exc.message


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(max_size=12) | st.from_regex(r"(sm_?|compute_)?\d{1,3}(\.\d)?[af]?(\+PTX)?", fullmatch=True),
                max_size=4))
def test_the_arch_parser_refuses_with_a_usage_error_only(values: list[str]) -> None:
    try:
        archs = parse_archs(values)
    except UsageError as exc:
        assert "\n" not in exc.message
    else:
        assert archs and all(arch.number >= 10 for arch in archs)


CLI_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(arch=CLI_TEXT | st.sampled_from(["86", "8.6", "sm_90a", "ampere", "86,", ""]),
       cuda=CLI_TEXT | st.sampled_from(["13", "13.0", "", "abc", "11.8"]),
       jobs=CLI_TEXT | st.sampled_from(["1", "0", "-3", "2.5", ""]),
       variant=CLI_TEXT | st.sampled_from(["hdims=64", "hdims", "nope=1", "=", "backward=maybe"]))
@example(arch="-:", cuda="", jobs="", variant="")  # argparse's own error: a value that looks like an option
def test_builder_plan_answers_bad_values_in_one_line(tmp_path_factory: pytest.TempPathFactory,
                                                      capsys: pytest.CaptureFixture[str],
                                                      arch: str, cuda: str, jobs: str, variant: str) -> None:
    cache = tmp_path_factory.mktemp("cache")
    code = main(["plan", "flash-attn", "--arch", arch, "--cuda", cuda, "--jobs", jobs, "--variant", variant,
                 "--cache", str(cache)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code != 0:
        errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, captured.err
        assert code in (2, 3, 4, 5, 13), captured.err
