"""The JSON schema of a recipe file, generated from the recipe dataclasses (builder/planning/recipe.py)
and shipped beside the recipes as recipes/recipe.schema.json, for editors (Taplo, VS Code's Even
Better TOML: `#:schema ./recipe.schema.json` atop a recipe). tests/test_recipe_schema.py checks the
stored file against this; after changing a dataclass, regenerate it:

    python -m builder.planning.recipe_schema
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.planning.recipe import Recipe
from builder.resources import shipped_dir
from builder.schema import json_schema

FILE_NAME = "recipe.schema.json"


def recipe_schema() -> dict[str, Any]:
    return json_schema(Recipe, title="builder recipe",
                       description="How builder fetches, patches, builds and verifies one package "
                                   "(recipes/<name>.toml).")


def render() -> str:
    """The schema as stored: indented JSON ending in a newline."""
    return json.dumps(recipe_schema(), indent=2) + "\n"


def stored_path() -> Path:
    return shipped_dir("recipes") / FILE_NAME


if __name__ == "__main__":
    stored_path().write_text(render(), encoding="utf-8")
