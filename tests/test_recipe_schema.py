"""Recipes are checked by the schema their dataclasses make: the stored JSON schema is what the
code generates, shipped recipes satisfy it, and a value of the wrong type is refused by its key path."""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path

import pytest

from builder.building.backends import BACKENDS
from builder.errors import RecipeError
from builder.planning.recipe import BackendName, RecipeBook, load_recipe
from builder.planning.recipe_schema import recipe_schema, render, stored_path
from builder.resources import shipped_dir

BASE = """name = "r"
backend = "torch-ext"
default_version = "1.0"
[versions."1.0"]
source = { path = "." }
"""


def test_the_stored_schema_is_the_generated_one() -> None:
    assert stored_path().read_text(encoding="utf-8") == render(), (
        "recipes/recipe.schema.json is stale: run `python -m builder.planning.recipe_schema`")


def test_every_key_has_a_description() -> None:
    schema = recipe_schema()
    tables = [schema, *schema["$defs"].values()]
    missing = [f"{table.get('description', '?')[:30]}: {key}" for table in tables
               for key, spec in table["properties"].items() if not spec.get("description")]
    assert missing == []


def test_the_backend_choices_are_the_backends() -> None:
    assert set(typing.get_args(BackendName)) == set(BACKENDS)


def test_shipped_recipes_satisfy_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(recipe_schema())
    for path in sorted(shipped_dir("recipes").glob("*.toml")):
        errors = [error.message for error in validator.iter_errors(tomllib.loads(path.read_text()))]
        assert errors == [], path.name
    broken = tomllib.loads(BASE + '[verify]\nimports = "x"\n')
    assert [error.message for error in validator.iter_errors(broken)] == ["'x' is not of type 'array'"]


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    load_recipe(str(path))


@pytest.mark.parametrize(("extra", "message"), [
    ('[verify]\nimports = "x"\n', 'r.toml: verify.imports: expected a list of strings, got "x"'),
    ("[build]\njob_memory_gb = \"4\"\n", 'r.toml: build.job_memory_gb: expected a number, got "4"'),
    ("[build]\nkernels = 0\n", "r.toml: build.kernels: expected true or false, got 0"),
    ("[build]\nenv = { X = 1 }\n", "r.toml: build.env.X: expected a string, got 1"),
    ('[deps]\ndrop = ["torch", 3]\n', "r.toml: deps.drop[1]: expected a string, got 3"),
    ('[requires]\ntorch = ">=2.2;x"\n', "r.toml: requires.torch: bad version range '>=2.2;x'"),
    ('[[patches]]\nwhen = { version = ">=1" }\n', "r.toml: patches[0]: missing required key 'file'"),
    ('[variants.v]\ndefault = "a"\n', "r.toml: variants.v: missing required key 'choices'"),
    ('[cc]\noutputs = { "libx.so" = "x.c" }\n', 'r.toml: cc.outputs."libx.so": expected a list of strings, got "x.c"'),
])
def test_a_value_of_the_wrong_type_is_refused_by_its_path(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load(tmp_path, BASE + extra)
    assert caught.value.message == message


def test_choices_and_required_keys(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as table:
        load(tmp_path, 'patches = { file = "x.patch" }\n' + BASE)
    assert table.value.message == 'r.toml: patches: expected a list of tables, got {"file": "x.patch"}'
    with pytest.raises(RecipeError) as caught:
        load(tmp_path, BASE.replace('"torch-ext"', '"torch_ext"'))
    assert caught.value.message == ('r.toml: backend: expected one of "torch-ext", "cc", "scikit-build", "make", '
                                    '"cmake", got "torch_ext" (did you mean \'torch-ext\'?)')
    with pytest.raises(RecipeError, match=r"^r.toml: versions.\"1.0\": missing required key 'source'$"):
        load(tmp_path, BASE.replace('source = { path = "." }', ""))
    with pytest.raises(RecipeError, match=r"^r.toml: missing required key 'default_version'$"):
        load(tmp_path, BASE.replace('default_version = "1.0"', ""))
    with pytest.raises(RecipeError, match=r"versions.x.y: 'x.y' is not a PEP 440 version"):
        load(tmp_path, BASE.replace('default_version = "1.0"', 'default_version = "x.y"')
             .replace('"1.0"]', '"x.y"]'))


def test_user_recipes_are_checked_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(BASE.replace('"r"', '"mine"') + '[verify]\nextensions = "ext"\n')
    with pytest.raises(RecipeError, match=r'mine\.toml: verify\.extensions: expected a list of strings, got "ext"'):
        RecipeBook((tmp_path,)).load("mine")
