"""Compile records in the cache: costs/<key>.json, and inside each built entry's entry.json, so
they travel with a shared cache (a pulled entry brings its records along)."""

from __future__ import annotations

import json

from builder.building.costs import BuildCosts
from builder.files import write_text_atomic
from builder.store.cache import Cache


def load(cache: Cache, key: str) -> BuildCosts | None:
    """The newest records for a key: costs/<key>.json, else an entry (pulled ones too) that has them."""
    path = cache.root / "costs" / f"{key}.json"
    if path.is_file():
        return BuildCosts.from_json(json.loads(path.read_text()))
    found = [e.meta["costs"] for e in cache.entries() if (e.meta.get("costs") or {}).get("key") == key]
    return BuildCosts.from_json(max(found, key=lambda c: c.get("created", 0))) if found else None


def starting(cache: Cache, key: str, reference: BuildCosts | None) -> BuildCosts | None:
    """What a build of `key` starts from: the records of its kind, else the recipe's `reference`; a
    first build that did not finish has records of some files only, the reference gives the rest."""
    own = load(cache, key)
    if own is None:
        return reference
    return own.with_earlier(reference) if own.unfinished and not own.earlier else own


def save(cache: Cache, costs: BuildCosts) -> None:
    """Keep a build's records as the newest of its kind; an unfinished build's keep the records of
    the files it did not reach."""
    if costs.unfinished:
        costs = costs.with_earlier(load(cache, costs.key))
    write_text_atomic(cache.dir("costs") / f"{costs.key}.json", json.dumps(costs.to_json(), indent=1))


def for_recipe(cache: Cache, recipe: str) -> list[BuildCosts]:
    """Every stored record set of a recipe, newest first."""
    found = {}
    for path in sorted(cache.dir("costs").glob("*.json")):
        costs = BuildCosts.from_json(json.loads(path.read_text()))
        found[costs.key] = costs
    for entry in cache.entries():
        data = entry.meta.get("costs")
        if data and data.get("key") not in found:
            found[data["key"]] = BuildCosts.from_json(data)
    return sorted((c for c in found.values() if c.recipe == recipe), key=lambda c: -c.created)
