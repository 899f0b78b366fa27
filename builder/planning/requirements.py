"""What a build does to its package's requirements: drop some (torch: never let pip resolve it from
the package's metadata), pin others to one exact version (a companion to the build made for it).

One rule for every place requirements are rewritten: the package's own build files before the
build (builder/building/pins.py) and the built wheel's METADATA (builder/store/retag.py). A
rewritten requirement keeps its name as written, its extras and its environment marker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder.errors import UsageError

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(text: str) -> str | None:
    """The canonical project name a requirement string starts with (also for f-string templates
    such as `torch>={TORCH_VERSION}` that packaging cannot parse)."""
    match = _NAME.match(text)
    return canonicalize_name(match.group(1)) if match else None


@dataclass(frozen=True)
class RequirementRules:
    """Requirements to drop and requirements to pin, by canonical project name."""

    drop: frozenset[str] = frozenset()
    pin: Mapping[str, str] = field(default_factory=dict)
    """Project -> the one version it is pinned to."""

    @classmethod
    def make(cls, drop: tuple[str, ...] = (), pin: Mapping[str, str] | None = None) -> RequirementRules:
        """Rules with canonical names, refusing a name both dropped and pinned or a pin that is no version."""
        dropped = frozenset(canonicalize_name(n) for n in drop)
        pinned: dict[str, str] = {canonicalize_name(n): v for n, v in (pin or {}).items()}
        if both := dropped & set(pinned):
            raise UsageError(f"requirement(s) both dropped and pinned: {', '.join(sorted(both))}")
        for name, version in pinned.items():
            try:
                Version(version)
            except InvalidVersion:
                raise UsageError(f"pin for {name}: {version!r} is not a PEP 440 version") from None
        return cls(dropped, pinned)

    def names(self) -> set[str]:
        return set(self.drop) | set(self.pin)

    def rewrite(self, requirement: str) -> str | None:
        """The requirement as the rules want it: None when dropped, `==version` when pinned (name as
        written, extras and marker kept), else unchanged."""
        name = requirement_name(requirement)
        if name is None or name not in self.names():
            return requirement
        if name in self.drop:
            return None
        try:
            parsed = Requirement(requirement)
        except InvalidRequirement:  # an f-string template: only its name is known
            written = _NAME.match(requirement)
            return f"{written.group(1) if written else name}=={self.pin[name]}"
        parsed.specifier = SpecifierSet(f"=={self.pin[name]}")
        return str(parsed)
