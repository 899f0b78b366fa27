"""Widening a version range (a `when` condition's or a variant's) to take in one more release,
written the way a person would: only the bound that excludes it changes, the rest stays as typed.

    ">=2.7.3,<=2.8.3.post1" + 2.8.3.post2  ->  ">=2.7.3,<=2.8.3.post2"
    "==2.8.3"               + 2.8.3.post2  ->  ">=2.8.3,<=2.8.3.post2"
    ">=1.3.0,<1.7"          + 1.7.1        ->  ">=1.3.0,<=1.7.1"
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.version import Version

from builder.errors import RecipeError


def admits(spec: str, version: Version) -> bool:
    """Whether a range text admits `version` (pre-releases admitted, as Condition.holds does)."""
    return SpecifierSet(spec).contains(version, prereleases=True)


def widen(spec: str, new: Version, known: Iterable[Version] = ()) -> str:
    """`spec` changed as little as it takes to admit `new`; every version of `known` keeps the
    answer it had (a widened range must not take in a release another rule covers)."""
    if admits(spec, new):
        return spec
    items = [item.strip() for item in spec.split(",") if item.strip()]
    widened: list[str] = []
    for item in items:
        try:
            specifier = Specifier(item)
        except InvalidSpecifier as exc:
            raise RecipeError(f"bad version range {spec!r}") from exc
        widened += [w for w in _widened(specifier, new, spec) if w not in widened]
    result = ",".join(widened)
    if not admits(result, new):  # pragma: no cover - each item now admits it
        raise RecipeError(f"cannot widen {spec!r} to take in {new}")
    changed = [str(v) for v in known if admits(spec, v) != admits(result, v)]
    if changed:
        raise RecipeError(f"widening {spec!r} to {result!r} for {new} would also change {', '.join(changed)}",
                          hint="write the range by hand")
    return result


def _widened(specifier: Specifier, new: Version, spec: str) -> list[str]:
    """The specifier, or what replaces it so that it admits `new`."""
    if specifier.contains(new, prereleases=True):
        return [str(specifier)]
    operator, version = specifier.operator, specifier.version
    if operator in ("<", "<="):
        return [f"<={new}"]
    if operator in (">", ">="):
        return [f">={new}"]
    if operator in ("==", "~=") and not version.endswith(".*"):
        low, high = sorted([Version(version), new])
        return [f">={low}", f"<={high}"]
    if operator == "==" and Version(version[:-2]) < new:  # a prefix, e.g. ==2.8.*
        return [f">={version[:-2]}", f"<={new}"]
    raise RecipeError(f"the range {spec!r} excludes {new} with {specifier}; it cannot be widened automatically",
                      hint="write the range by hand")
