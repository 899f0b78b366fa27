"""Declared build variants (Spack style): a recipe names what a user may choose, and what each
choice does to the build; `--variant NAME=VALUE` picks.

    [variants.hdim]
    description = "head dimensions compiled"
    choices = ["32", "64", "96", "128", "192", "256"]
    multi = true                      # a comma list of choices; the default is all of them
    env = { FLASH_ATTN_HDIMS = "{value}" }
    patches = ["flash-attn/2.8.3-variants.patch"]
    versions = "==2.8.3"              # the versions it exists for (default: all)

    [variants.backward]
    choices = ["on", "off"]
    default = "on"
    env = { FLASH_ATTN_BACKWARD = "0" }
    defines = ["SOME_MACRO={value}"]

A variant left at its default changes nothing (same cache key, same wheel as a build without
variants). Any other value sets the variant's env (templated with {value}: a comma list for a
multi variant), adds its defines to NVCC_APPEND_FLAGS (read by every nvcc), CFLAGS and CXXFLAGS,
applies its patches after the recipe's, and is named in the cache key, the local version
(`.hdim64x128`, `.backwardoff`) and the provenance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from builder.errors import RecipeError, UsageError
from builder.schema import DERIVED

ALL = "all"
DEFINE_VARIABLES = ("NVCC_APPEND_FLAGS", "CFLAGS", "CXXFLAGS")


@dataclass(frozen=True)
class Variant:
    """A [variants.NAME] table: a choice a user makes with --variant NAME=VALUE."""

    name: str = field(metadata=DERIVED)
    choices: tuple[str, ...]
    """The values it may take."""
    default: str = field(metadata={"optional": True})
    """The value when none is chosen (default: the first choice; for a multi variant "all")."""
    multi: bool = False
    """A comma list of choices may be chosen (a kernel subset)."""
    description: str = ""
    """One line for `builder recipes`."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables set when it is not at its default ({value}: the chosen value)."""
    defines: tuple[str, ...] = ()
    """Macros (NAME or NAME={value}) added to NVCC_APPEND_FLAGS, CFLAGS and CXXFLAGS."""
    patches: tuple[str, ...] = ()
    """Files under patches/, applied when the value is not the default."""
    versions: SpecifierSet = field(default_factory=SpecifierSet)
    """The package versions the variant exists for (empty: all)."""

    def normalize(self, value: str) -> str:
        """The canonical value: a choice, or for a multi variant the chosen ones in declared order."""
        if not self.multi:
            if value not in self.choices:
                raise UsageError(f"variant {self.name}: {value!r} is not one of {', '.join(self.choices)}")
            return value
        if value == ALL:
            return ALL
        picked = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in picked if v not in self.choices]
        if unknown or not picked:
            raise UsageError(f"variant {self.name}: {', '.join(unknown) or repr(value)} not among "
                             f"{', '.join(self.choices)} (or {ALL})")
        chosen = [c for c in self.choices if c in picked]
        return ALL if len(chosen) == len(self.choices) else ",".join(chosen)

    def label(self, value: str) -> str:
        """The value's part of the local version: lowercase letters and digits."""
        return re.sub(r"[^a-z0-9]", "", f"{self.name}{value.replace(',', 'x')}".lower())


def parse_variants(table: Mapping[str, Any], where: str) -> dict[str, Variant]:
    variants = {}
    for name, spec in table.items():
        here = f"{where}: variants.{name}"
        choices = tuple(str(c) for c in spec.get("choices", ()))
        multi = bool(spec.get("multi", False))
        default = str(spec.get("default", ALL if multi else (choices[0] if choices else "")))
        if not choices or (default not in choices and not (multi and default == ALL)):
            raise RecipeError(f"{here}: needs choices, and a default among them")
        variants[name] = Variant(name=name, choices=choices, default=default, multi=multi,
                                 description=str(spec.get("description", "")),
                                 env={str(k): str(v) for k, v in spec.get("env", {}).items()},
                                 defines=tuple(str(d) for d in spec.get("defines", ())),
                                 patches=tuple(str(p) for p in spec.get("patches", ())),
                                 versions=_specifier(spec.get("versions", ""), here))
    return variants


def _specifier(text: str, where: str) -> SpecifierSet:
    try:
        return SpecifierSet(str(text))
    except InvalidSpecifier as exc:
        raise RecipeError(f"{where}: versions: {exc}") from None


def check_variant_names(variants: Mapping[str, Variant], requested: Iterable[str], recipe: str) -> None:
    """Each NAME=VALUE names a declared variant (the values are checked once the version is known)."""
    for item in requested:
        name, sep, _ = item.partition("=")
        if not sep:
            raise UsageError(f"--variant {item!r}: expected NAME=VALUE")
        if name not in variants:
            known = ", ".join(variants) or "none"
            raise UsageError(f"{recipe} has no variant {name!r} (its variants: {known})")


def choose(variants: Mapping[str, Variant], requested: Iterable[str], recipe: str,
           version: str) -> dict[str, str]:
    """NAME=VALUE choices checked and normalized; only those that differ from the default."""
    check_variant_names(variants, requested, recipe)
    chosen: dict[str, str] = {}
    for item in requested:
        name, _, value = item.partition("=")
        if not variants[name].versions.contains(version, prereleases=True):
            raise UsageError(f"variant {name} of {recipe} needs version {variants[name].versions}, not {version}")
        chosen[name] = variants[name].normalize(value)
    return {name: value for name, value in chosen.items() if value != variants[name].default}


def variant_env(variants: Mapping[str, Variant], chosen: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The variables the chosen variants set: their env, and their defines as -D flags."""
    out: dict[str, str] = {}
    defines = []
    for name, value in chosen.items():
        variant = variants[name]
        out.update({key: text.replace("{value}", value) for key, text in variant.env.items()})
        defines += [f"-D{d.replace('{value}', value)}" for d in variant.defines]
    if defines:
        for key in DEFINE_VARIABLES:
            out[key] = " ".join(filter(None, [env.get(key, ""), *defines]))
    return out


def variant_patches(variants: Mapping[str, Variant], chosen: Mapping[str, str]) -> dict[str, list[str]]:
    """Each patch file the chosen variants bring, in order, with the variants that bring it."""
    files: dict[str, list[str]] = {}
    for name in chosen:
        for file in variants[name].patches:
            files.setdefault(file, []).append(name)
    return files


def labels(variants: Mapping[str, Variant], chosen: Mapping[str, str]) -> list[str]:
    return [variants[name].label(value) for name, value in sorted(chosen.items())]
