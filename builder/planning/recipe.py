"""Recipes: <name>.toml files loaded into frozen dataclasses, every key checked.

A recipe is data. The dataclasses below are the one description of the file: each field's type,
default (none: a required key) and docstring; the loader checks a parsed file against them
(builder/schema.py: wrong types, missing and unknown keys, choices, each named by its key path)
and the JSON schema shipped as recipes/recipe.schema.json is generated from them
(`python -m builder.planning.recipe_schema`; tests/test_recipe_schema.py checks the stored one).

Every conditional part (a patch) carries a `when` table of PEP 440 specifiers over `version`,
`torch`, `cuda` and `python`, evaluated in `Condition.holds` and nowhere else.

Recipes are found by a RecipeBook: the folders of the recipe-path setting first (a user's recipe
of a shipped name wins), then the recipes builder ships; a path to a .toml file names one directly.
A recipe's patch files are looked up in a `patches/` folder inside the recipe's folder, then in
one beside it (the shipped layout: recipes/ and patches/ side by side), then in the shipped ones.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from builder.errors import RecipeError
from builder.planning.source_spec import SourceSpec
from builder.planning.variants import Variant, parse_variants
from builder.resources import shipped_dir
from builder.schema import DERIVED, check_table
from builder.tables import did_you_mean

# Names a recipe's env values and build flags may use as {name}; filled in by the planner.
TEMPLATE_FIELDS = frozenset({
    "archs", "archs_comma", "arch_names", "gencode", "torch_arch_list", "cxx_std", "jobs",
    "nvcc_threads", "cuda", "cuda_digits", "cuda_home", "nvcc", "cc", "cxx", "torch", "python",
})

# The build styles (builder/building/backends: BACKENDS; tests/test_recipe_schema.py checks they agree).
BackendName = Literal["torch-ext", "cc", "scikit-build", "make", "cmake"]


@dataclass(frozen=True)
class Condition:
    """Specifier sets over the facts of one build (PEP 440, pre-releases admitted); an absent key
    always holds."""

    version: SpecifierSet | None = None
    """The package version, e.g. ">=2.7.3,<=2.8.3.post1"."""
    torch: SpecifierSet | None = None
    """The target's torch release."""
    cuda: SpecifierSet | None = None
    """The toolkit's CUDA version (nvcc's, e.g. 13.0.88)."""
    python: SpecifierSet | None = None
    """The target's Python X.Y."""

    @property
    def specs(self) -> dict[str, SpecifierSet]:
        return {key: spec for key in ("version", "torch", "cuda", "python")
                if (spec := getattr(self, key)) is not None}

    def holds(self, facts: Mapping[str, str]) -> bool:
        """True when every specifier admits the matching fact (pre-releases admitted)."""
        for key, spec in self.specs.items():
            value = facts.get(key)
            if value is None or not spec.contains(Version(value).public, prereleases=True):
                return False
        return True

    def describe(self) -> str:
        return ", ".join(f"{key} {spec}" for key, spec in self.specs.items()) or "always"

    def only(self, *keys: str) -> Condition:
        """The part of the condition over `keys` (a new release's version, before any target)."""
        return Condition(**{key: spec for key, spec in self.specs.items() if key in keys})


@dataclass(frozen=True)
class Patch:
    """A unified diff under patches/, applied in recipe order when its condition holds."""

    file: str
    """The patch file: a path under a patches/ folder (e.g. "flash-attn/2.8-any-arch.patch"), or absolute."""
    path: Path = field(default=Path(), metadata=DERIVED)
    """Where the file is (builder.planning.recipe.find_patch)."""
    when: Condition = field(default_factory=Condition)
    """When it applies (default: always)."""
    variants: str = field(default="", metadata=DERIVED)
    """For a variant's patch: the variants that bring it (the condition is then always)."""


@dataclass(frozen=True)
class Requires:
    """What a target must satisfy before anything compiles."""

    cuda: SpecifierSet = field(default_factory=SpecifierSet)
    """The CUDA versions the package builds with, e.g. ">=11.7"."""
    torch: SpecifierSet = field(default_factory=SpecifierSet)
    """The torch releases it builds against, e.g. ">=2.2"."""
    python: SpecifierSet = field(default_factory=SpecifierSet)
    """The Python versions (X.Y) it builds for."""
    archs: tuple[str, ...] = ()
    """Archs the package has kernels for (normal form, e.g. "80"); empty means any."""


@dataclass(frozen=True)
class BuildSettings:
    """How the backend runs: memory per compile job, templated env, build requirements."""

    job_memory_gb: float = 4.0
    """Memory one compile job is expected to take, in GB (the planner's estimate before any records)."""
    nvcc_threads: int = 1
    """nvcc --threads per compile ({nvcc_threads} in env values)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables set for the build; values may use {archs}, {cuda}, ... (TEMPLATE_FIELDS)."""
    requirements: tuple[str, ...] = ()
    """Packages the build environment needs besides torch (pip requirement strings)."""
    kernels: bool = True
    """False for a package with no GPU code (autoawq): no archs are chosen or checked, and the
    local version names no sm; --arch is ignored."""


@dataclass(frozen=True)
class DepRules:
    """How the package's own dependency pins are rewritten in the wheel it produces."""

    drop: tuple[str, ...] = ()
    """Requirements removed from the wheel's metadata (e.g. torch: the target's stays)."""
    pin_to_target: tuple[str, ...] = ()
    """Names pinned to the version the target has (only "torch" is known today)."""
    rewrite: tuple[str, ...] = ()
    """Build files (setup.py, pyproject.toml) whose requirement lists get the same rules before
    the build (builder/pins.py)."""
    companions: tuple[str, ...] = ()
    """Requirements builder satisfies with its own build of the recipe of that name, for the same
    target: built (or found in the cache) and installed first, the requirement pinned to that
    build's exact version. `--no-companions` drops them instead."""


@dataclass(frozen=True)
class Verify:
    """What proves an install works."""

    imports: tuple[str, ...] = ()
    """Modules imported in a fresh interpreter of the target (after torch)."""
    extensions: tuple[str, ...] = ()
    """Modules whose shared objects must hold cubins for exactly the requested archs."""
    gpu_check: str = ""
    """Python code run in the target when a GPU is visible; it raises on a wrong result."""
    artifact_check: str = ""
    """A script (under recipes/) the target runs with the installed artifacts' paths as its
    arguments; it exits non-zero on a wrong result."""
    main_module: str = ""
    """A module run as `python -m` in the target (bitsandbytes' self-check); it must exit 0 and
    load the native libraries just installed, not other copies."""


@dataclass(frozen=True)
class CcBuild:
    """The `cc` backend's work: each output library from its C sources, with these flags."""

    outputs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Each library to make (e.g. "libx.so") and the C sources it is compiled from."""
    flags: tuple[str, ...] = ()
    """Compiler flags for every source."""
    package: str = ""
    """The import package the libraries sit in inside the wheel that carries them."""

    def inputs(self) -> tuple[str, ...]:
        """Every C source the outputs are made from: all that names a --source directory's content."""
        return tuple(sorted({s for sources in self.outputs.values() for s in sources}))


@dataclass(frozen=True)
class NativeBuild:
    """The [make] table: the package's own Makefile run in its tree, then the tree packaged by
    `pip wheel` (its setup.py picks the libraries up)."""

    outputs: tuple[str, ...] = ()
    """Libraries the build must leave in the tree (templated, e.g.
    "bitsandbytes/libbitsandbytes_cuda{cuda_digits}.so"): checked, then required in the wheel."""
    targets: tuple[str, ...] = ()
    """make: the targets, run one after another; cmake: build targets (empty: the default)."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """VAR=value on make's command line (they override the Makefile's own assignments). Templated."""
    wheel_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the packaging step (BNB_SKIP_CMAKE=1: do not build again)."""


@dataclass(frozen=True)
class CMakeBuild(NativeBuild):
    """The [cmake] table: the package's CMake project configured and built in its tree, then the
    tree packaged by `pip wheel`."""

    variables: Mapping[str, str] = field(default_factory=dict, metadata={"key": "defines"})
    """-DVAR=value at configure time. Templated."""


@dataclass(frozen=True)
class WheelBuild:
    """`--install-mode wheel` for a recipe whose default output is artifacts: another backend
    (scikit-build) over a project of builder's own, with the package's sources copied in."""

    backend: BackendName
    """The backend that builds the wheel."""
    project_dir: Path = field(metadata={"key": "project", "file_type": str})
    """The project folder, relative to the recipe."""
    module: str
    """The import name of the module the wheel provides (checked after install)."""
    sources: tuple[str, ...] = ()
    """Files of the package's source copied into the project."""


@dataclass(frozen=True)
class Artifacts:
    """Installing a build's libraries into a directory instead of site-packages."""

    beside: str = ""
    """A file that marks the default directory: --source's when it holds this file."""
    package: str = ""
    """An import package the libraries go into, found installed in the target (bitsandbytes);
    its presence makes artifacts the default install mode."""


@dataclass(frozen=True)
class VersionEntry:
    """One [versions."X"] table: where that version's source is, and what it needs on top of the
    recipe's requirements."""

    source: SourceSpec
    """Exactly one of pypi (with file), url, path or local; sha256 for a download."""
    requires: Requires = field(default_factory=Requires)
    """This version's own requirements, checked on top of the recipe's [requires]."""
    backend: BackendName | None = None
    """Another backend than the recipe's, for this version."""


@dataclass(frozen=True)
class Recipe:
    """A recipe file: how one package is fetched, built, patched and verified."""

    name: str
    """The name users build it by (`builder build NAME`)."""
    backend: BackendName
    """How it builds: torch-ext (torch CUDAExtension via pip wheel), cc, scikit-build, make or cmake."""
    default_version: str
    """The version built when none is asked and its requirements hold (one of versions)."""
    versions: Mapping[str, SourceSpec] = field(metadata={"file_type": Mapping[str, VersionEntry]})
    """Each version builder knows, by its version string."""
    description: str = ""
    """One line for `builder recipes`."""
    requires: Requires = field(default_factory=Requires)
    """What every version requires of the target."""
    version_requires: Mapping[str, Requires] = field(default_factory=dict, metadata=DERIVED)
    """Per-version requirements ([versions."X".requires]), checked on top of `requires`."""
    build: BuildSettings = field(default_factory=BuildSettings)
    """How the backend runs."""
    deps: DepRules = field(default_factory=DepRules)
    """How the wheel's own requirements are rewritten."""
    patches: tuple[Patch, ...] = ()
    """Patches applied in order ([[patches]]), each when its condition holds."""
    verify: Verify = field(default_factory=Verify)
    """What proves an install works."""
    cc: CcBuild = field(default_factory=CcBuild)
    """The cc backend's libraries."""
    make: NativeBuild | None = None
    """The make backend's work."""
    cmake: CMakeBuild | None = None
    """The cmake backend's work."""
    version_backends: Mapping[str, str] = field(default_factory=dict, metadata=DERIVED)
    """Versions built by another backend than the recipe's ([versions."X"].backend)."""
    artifacts: Artifacts | None = None
    """Set when the recipe's default install is its libraries into a directory."""
    wheel: WheelBuild | None = None
    """How --install-mode wheel builds a recipe whose default output is artifacts."""
    path: Path | None = field(default=None, metadata=DERIVED)
    variants: Mapping[str, Variant] = field(default_factory=dict)
    """Declared build variants (builder/variants.py), chosen with --variant NAME=VALUE."""
    variant_patch_paths: Mapping[str, Path] = field(default_factory=dict, metadata=DERIVED)
    """Where each patch file the variants name is."""

    @property
    def native(self) -> dict[str, NativeBuild]:
        """The [make] and [cmake] tables, by backend name."""
        return {name: table for name, table in (("make", self.make), ("cmake", self.cmake)) if table is not None}

    def source_for(self, version: str | None) -> tuple[str, SourceSpec]:
        """The version asked (default when None) and its source; unknown versions refused."""
        chosen = version or self.default_version
        if chosen not in self.versions:
            known = ", ".join(sorted(self.versions, key=Version, reverse=True))
            raise RecipeError(f"{self.name} has no version {chosen!r}; known: {known}")
        return chosen, self.versions[chosen]

    def backend_for(self, version: str) -> str:
        return self.version_backends.get(version, self.backend)

    def requirements_for(self, version: str) -> tuple[Requires, ...]:
        """The recipe's requirements and the version's own, both to be met."""
        extra = self.version_requires.get(version)
        return (self.requires, extra) if extra else (self.requires,)

    def patches_for(self, facts: Mapping[str, str]) -> tuple[Patch, ...]:
        return tuple(patch for patch in self.patches if patch.when.holds(facts))


def _check_template(value: str, where: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value)]
    except ValueError as exc:
        raise RecipeError(f"{where}: {value!r} is not a template: {exc}",
                          hint="write a literal brace as {{ or }}") from None
    for name in names:
        if name is not None and name not in TEMPLATE_FIELDS:
            raise RecipeError(f"{where}: unknown template field {{{name}}}{did_you_mean(name, TEMPLATE_FIELDS)}")


def _specs(table: Mapping[str, Any], cls: type[Any]) -> Any:
    """A dataclass of specifier sets (Requires, Condition) from its checked table."""
    return cls(**{key: SpecifierSet(value) if isinstance(value, str) else tuple(value) for key, value in table.items()})


def _source(table: Mapping[str, Any], where: str, base: Path | None) -> SourceSpec:
    spec = SourceSpec(**table)
    if spec.path is not None and base is not None:
        spec = SourceSpec(path=str((base / spec.path).resolve()), sha256=spec.sha256)
    if sum(value is not None for value in (spec.pypi, spec.url, spec.path, spec.local)) != 1:
        raise RecipeError(f"{where}: give exactly one of pypi, url, path, local")
    if spec.local is not None:
        return spec
    if spec.pypi is not None and spec.file is None:
        raise RecipeError(f"{where}: a pypi source needs file = \"<sdist file name>\"")
    if spec.path is None and spec.sha256 is None:
        raise RecipeError(f"{where}: a downloaded source needs sha256")
    return spec


def _native_build(table: Mapping[str, Any], where: str, cls: type[NativeBuild]) -> NativeBuild:
    key = "defines" if cls is CMakeBuild else "variables"
    if not table.get("outputs"):
        raise RecipeError(f"{where}: outputs must name the libraries the build makes")
    for name, value in table.get(key, {}).items():
        _check_template(value, f"{where}.{key}.{name}")
    for output in table["outputs"]:
        _check_template(output, f"{where}.outputs")
    return cls(outputs=tuple(table["outputs"]), targets=tuple(table.get("targets", ())),
               variables=dict(table.get(key, {})), wheel_env=dict(table.get("wheel_env", {})))


def _wheel_build(table: Mapping[str, Any] | None, where: str, base: Path) -> WheelBuild | None:
    if table is None:
        return None
    project = (base / table["project"]).resolve()
    if not project.is_dir():
        raise RecipeError(f"{where}: project folder {table['project']} not found beside the recipe")
    return WheelBuild(backend=table["backend"], project_dir=project, sources=tuple(table.get("sources", ())),
                      module=table["module"])


def _versions(data: Mapping[str, Any], where: str, base: Path | None) -> dict[str, VersionEntry]:
    entries = {}
    for version, table in data["versions"].items():
        here = f"{where}: versions.{version}"
        try:
            Version(version)
        except InvalidVersion:
            raise RecipeError(f"{here}: {version!r} is not a PEP 440 version") from None
        entries[version] = VersionEntry(source=_source(table["source"], f"{here}.source", base),
                                        requires=_specs(table.get("requires", {}), Requires),
                                        backend=table.get("backend"))
    if data["default_version"] not in entries:
        raise RecipeError(f"{where}: default_version {data['default_version']!r} is not listed")
    return entries


def parse_recipe(data: Mapping[str, Any], path: Path | None = None) -> Recipe:
    """Build a Recipe from parsed TOML: every key checked against the dataclasses above (types,
    required keys, unknown keys with a suggestion, choices), then what they cannot say (one source
    kind per version, templates, patch files that exist, a table for a native backend)."""
    where = path.name if path else "recipe"
    check_table(data, Recipe, where, RecipeError)
    base = path.parent if path else shipped_dir("recipes")
    versions = _versions(data, where, path.parent if path else None)
    version_backends = {version: entry.backend for version, entry in versions.items() if entry.backend}
    native = {name: _native_build(data[name], f"{where}: {name}", cls)
              for name, cls in (("make", NativeBuild), ("cmake", CMakeBuild)) if name in data}
    for backend in {data["backend"], *version_backends.values()} & {"make", "cmake"}:
        if backend not in native:
            raise RecipeError(f"{where}: the {backend} backend needs a [{backend}] table")
    build = data.get("build", {})
    for key, value in build.get("env", {}).items():
        _check_template(value, f"{where}: build.env.{key}")
    patches = []
    for index, table in enumerate(data.get("patches", [])):
        here = f"{where}: patches[{index}]"
        patches.append(Patch(file=table["file"], when=_specs(table.get("when", {}), Condition),
                             path=find_patch(table["file"], base, here)))
    variants = parse_variants(data.get("variants", {}), where)
    variant_patch_paths = {file: find_patch(file, base, f"{where}: variants.{variant.name}")
                           for variant in variants.values() for file in variant.patches}
    cc = data.get("cc", {})
    return Recipe(
        name=data["name"],
        backend=data["backend"],
        default_version=data["default_version"],
        versions={version: entry.source for version, entry in versions.items()},
        description=data.get("description", ""),
        requires=_specs(data.get("requires", {}), Requires),
        version_requires={version: entry.requires for version, entry in versions.items()
                          if entry.requires != Requires()},
        build=BuildSettings(**{**build, "requirements": tuple(build.get("requirements", ())),
                               "job_memory_gb": float(build.get("job_memory_gb", 4.0))}),
        deps=_dep_rules(data.get("deps", {}), where),
        patches=tuple(patches),
        verify=_verify(data.get("verify", {})),
        cc=CcBuild(outputs={k: tuple(v) for k, v in cc.get("outputs", {}).items()}, flags=tuple(cc.get("flags", ())),
                   package=cc.get("package", "")),
        make=native.get("make"),
        cmake=cmake if isinstance(cmake := native.get("cmake"), CMakeBuild) else None,
        version_backends=version_backends,
        artifacts=Artifacts(**data["artifacts"]) if "artifacts" in data else None,
        wheel=_wheel_build(data.get("wheel"), f"{where}: wheel", base),
        path=path,
        variants=variants,
        variant_patch_paths=variant_patch_paths,
    )


def _verify(table: Mapping[str, Any]) -> Verify:
    return Verify(imports=tuple(table.get("imports", ())), extensions=tuple(table.get("extensions", ())),
                  gpu_check=table.get("gpu_check", ""), artifact_check=table.get("artifact_check", ""),
                  main_module=table.get("main_module", ""))


def _dep_rules(deps: Mapping[str, Any], where: str) -> DepRules:
    rules = DepRules(**{key: tuple(value) for key, value in deps.items()})
    both = set(rules.drop) & set(rules.companions)
    if both:
        raise RecipeError(f"{where}: deps: {', '.join(sorted(both))} both dropped and a companion",
                          hint="list a companion only under companions; --no-companions drops it")
    return rules


def patch_dirs(base: Path) -> tuple[Path, ...]:
    """Where a recipe in folder `base` finds its patch files, in order."""
    return tuple(dict.fromkeys([base / "patches", base.parent / "patches", shipped_dir("patches")]))


def find_patch(file: str, base: Path, where: str) -> Path:
    """The patch file `file` (a path relative to a patches folder, or absolute) for a recipe in `base`."""
    if Path(file).is_absolute():
        candidates: tuple[Path, ...] = (Path(file),)
    else:
        candidates = tuple(folder / file for folder in patch_dirs(base))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c.parent) for c in candidates)
    raise RecipeError(f"{where}: patch file {file} not found (looked in {looked})")


@dataclass(frozen=True)
class RecipeBook:
    """The recipes a user can name: their recipe-path folders first, then builder's own."""

    folders: tuple[Path, ...] = ()

    @property
    def search(self) -> tuple[Path, ...]:
        return (*self.folders, shipped_dir("recipes"))

    def available(self) -> dict[str, Path]:
        """Each recipe name with the file it loads from (the first folder that has it)."""
        found: dict[str, Path] = {}
        for folder in self.search:
            for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
                found.setdefault(path.stem, path)
        return dict(sorted(found.items()))

    def origin(self, path: Path) -> str:
        """"shipped", or the recipe-path folder a recipe file came from."""
        return "shipped" if path.parent == shipped_dir("recipes") else str(path.parent)

    def locate(self, name_or_path: str) -> Path:
        """The file of a recipe name, or a .toml path as given."""
        path = Path(name_or_path).expanduser()
        if path.suffix == ".toml":
            if not path.is_file():
                raise RecipeError(f"no recipe file {name_or_path}")
            return path.resolve()
        available = self.available()
        if name_or_path not in available:
            hint = did_you_mean(name_or_path, available).strip(" ()")
            raise RecipeError(f"unknown recipe {name_or_path!r}", hint=hint)
        return available[name_or_path]

    def load(self, name_or_path: str) -> Recipe:
        """Load a recipe by name or by the path of a TOML file."""
        path = self.locate(name_or_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path.name}: {exc}") from exc
        except OSError as exc:
            raise RecipeError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return parse_recipe(data, path)


def load_recipe(name_or_path: str, book: RecipeBook | None = None) -> Recipe:
    """A recipe by name (the recipe path, then the shipped ones) or by the path of a TOML file."""
    return (book or RecipeBook()).load(name_or_path)
