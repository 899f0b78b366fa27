"""Recipes: <name>.toml files loaded into frozen dataclasses, unknown keys refused.

A recipe is data. Every conditional part (a patch) carries a `when` table of PEP 440 specifiers
over `version`, `torch`, `cuda` and `python`, evaluated in `Condition.holds` and nowhere else.

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
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from builder.errors import RecipeError
from builder.planning.source_spec import SourceSpec
from builder.planning.variants import Variant, parse_variants
from builder.resources import shipped_dir
from builder.tables import check_keys, did_you_mean

# Names a recipe's env values and build flags may use as {name}; filled in by the planner.
TEMPLATE_FIELDS = frozenset({
    "archs", "archs_comma", "arch_names", "gencode", "torch_arch_list", "cxx_std", "jobs",
    "nvcc_threads", "cuda", "cuda_digits", "cuda_home", "nvcc", "cc", "cxx", "torch", "python",
})


@dataclass(frozen=True)
class Condition:
    """Specifier sets over the facts of one build; an absent key always holds."""

    specs: Mapping[str, SpecifierSet] = field(default_factory=dict)

    KEYS = ("version", "torch", "cuda", "python")

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
        return Condition({key: spec for key, spec in self.specs.items() if key in keys})


@dataclass(frozen=True)
class Patch:
    """A unified diff under patches/, applied in recipe order when its condition holds."""

    file: str
    when: Condition
    path: Path
    """Where the file is (builder.planning.recipe.find_patch)."""
    variants: str = ""
    """For a variant's patch: the variants that bring it (the condition is then always)."""


@dataclass(frozen=True)
class Requires:
    """What a target must satisfy before anything compiles."""

    cuda: SpecifierSet = field(default_factory=SpecifierSet)
    torch: SpecifierSet = field(default_factory=SpecifierSet)
    archs: tuple[str, ...] = ()
    """Archs the package has kernels for (normal form, e.g. "80"); empty means any."""


@dataclass(frozen=True)
class BuildSettings:
    """How the backend runs: memory per compile job, templated env, build requirements."""

    job_memory_gb: float = 4.0
    nvcc_threads: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()
    """Packages the build environment needs besides torch (pip requirement strings)."""
    kernels: bool = True
    """False for a package with no GPU code (autoawq): no archs are chosen or checked, and the
    local version names no sm; --arch is ignored."""


@dataclass(frozen=True)
class DepRules:
    """How the package's own dependency pins are rewritten in the wheel it produces."""

    drop: tuple[str, ...] = ()
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
    flags: tuple[str, ...] = ()
    package: str = ""
    """The import package the libraries sit in inside the wheel that carries them."""

    def inputs(self) -> tuple[str, ...]:
        """Every C source the outputs are made from: all that names a --source directory's content."""
        return tuple(sorted({s for sources in self.outputs.values() for s in sources}))


@dataclass(frozen=True)
class NativeBuild:
    """The `make` and `cmake` backends' work: the package's own build system run in its tree,
    then the tree packaged by `pip wheel` (its setup.py picks the libraries up)."""

    outputs: tuple[str, ...] = ()
    """Libraries the build must leave in the tree (templated, e.g.
    "bitsandbytes/libbitsandbytes_cuda{cuda_digits}.so"): checked, then required in the wheel."""
    targets: tuple[str, ...] = ()
    """make: the targets, run one after another; cmake: build targets (empty: the default)."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """make: VAR=value on the command line (they override the Makefile's own assignments);
    cmake: -DVAR=value at configure time. Templated."""
    wheel_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the packaging step (BNB_SKIP_CMAKE=1: do not build again)."""


@dataclass(frozen=True)
class WheelBuild:
    """`--install-mode wheel` for a recipe whose default output is artifacts: another backend
    (scikit-build) over a project of builder's own, with the package's sources copied in."""

    backend: str
    project_dir: Path
    sources: tuple[str, ...]
    module: str
    """The import name of the module the wheel provides (checked after install)."""


@dataclass(frozen=True)
class Artifacts:
    """Installing a build's libraries into a directory instead of site-packages."""

    beside: str = ""
    """A file that marks the default directory: --source's when it holds this file."""
    package: str = ""
    """An import package the libraries go into, found installed in the target (bitsandbytes);
    its presence makes artifacts the default install mode."""


@dataclass(frozen=True)
class Recipe:
    name: str
    backend: str
    default_version: str
    versions: Mapping[str, SourceSpec]
    description: str = ""
    requires: Requires = field(default_factory=Requires)
    version_requires: Mapping[str, Requires] = field(default_factory=dict)
    """Per-version requirements ([versions."X".requires]), checked on top of `requires`."""
    build: BuildSettings = field(default_factory=BuildSettings)
    deps: DepRules = field(default_factory=DepRules)
    patches: tuple[Patch, ...] = ()
    verify: Verify = field(default_factory=Verify)
    cc: CcBuild = field(default_factory=CcBuild)
    native: Mapping[str, NativeBuild] = field(default_factory=dict)
    """The [make] and [cmake] tables, by backend name."""
    version_backends: Mapping[str, str] = field(default_factory=dict)
    """Versions built by another backend than the recipe's ([versions."X"].backend)."""
    artifacts: Artifacts | None = None
    """Set when the recipe's default install is its libraries into a directory."""
    wheel: WheelBuild | None = None
    path: Path | None = None
    variants: Mapping[str, Variant] = field(default_factory=dict)
    """Declared build variants (builder/variants.py), chosen with --variant NAME=VALUE."""
    variant_patch_paths: Mapping[str, Path] = field(default_factory=dict)
    """Where each patch file the variants name is."""

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


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    check_keys(table, allowed, where, RecipeError)


def _specifier(text: str, where: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier as exc:
        raise RecipeError(f"{where}: bad version range {text!r}") from exc


def _condition(table: Mapping[str, str], where: str) -> Condition:
    _check_keys(table, Condition.KEYS, where)
    return Condition({key: _specifier(value, f"{where}.{key}") for key, value in table.items()})


def _check_template(value: str, where: str) -> None:
    for _, name, _, _ in string.Formatter().parse(value):
        if name is not None and name not in TEMPLATE_FIELDS:
            raise RecipeError(f"{where}: unknown template field {{{name}}}{did_you_mean(name, TEMPLATE_FIELDS)}")


def _source(table: Mapping[str, Any], where: str, base: Path | None) -> SourceSpec:
    _check_keys(table, ("pypi", "file", "url", "path", "sha256", "local"), where)
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


def _requires(table: Mapping[str, Any], where: str) -> Requires:
    _check_keys(table, ("cuda", "torch", "archs"), where)
    return Requires(cuda=_specifier(table.get("cuda", ""), f"{where}.cuda"),
                    torch=_specifier(table.get("torch", ""), f"{where}.torch"),
                    archs=tuple(str(a) for a in table.get("archs", ())))


def _native_build(table: Mapping[str, Any], where: str, settings_key: str) -> NativeBuild:
    _check_keys(table, ("outputs", "targets", settings_key, "wheel_env"), where)
    if not table.get("outputs"):
        raise RecipeError(f"{where}: outputs must name the libraries the build makes")
    variables = {str(k): str(v) for k, v in table.get(settings_key, {}).items()}
    for key, value in variables.items():
        _check_template(value, f"{where}.{settings_key}.{key}")
    for output in table["outputs"]:
        _check_template(output, f"{where}.outputs")
    return NativeBuild(outputs=tuple(table["outputs"]), targets=tuple(table.get("targets", ())),
                       variables=variables, wheel_env={str(k): str(v) for k, v in table.get("wheel_env", {}).items()})


def _wheel_build(table: Mapping[str, Any] | None, where: str, base: Path) -> WheelBuild | None:
    if table is None:
        return None
    _check_keys(table, ("backend", "project", "sources", "module"), where)
    for key in ("backend", "project", "module"):
        if key not in table:
            raise RecipeError(f"{where}: missing required key {key!r}")
    project = (base / table["project"]).resolve()
    if not project.is_dir():
        raise RecipeError(f"{where}: project folder {table['project']} not found beside the recipe")
    return WheelBuild(backend=str(table["backend"]), project_dir=project,
                      sources=tuple(table.get("sources", ())), module=str(table["module"]))


def parse_recipe(data: Mapping[str, Any], path: Path | None = None) -> Recipe:
    """Build a Recipe from parsed TOML, refusing unknown keys with a suggestion."""
    where = path.name if path else "recipe"
    _check_keys(data, ("name", "backend", "default_version", "description", "versions",
                       "requires", "build", "deps", "patches", "verify", "cc", "make", "cmake",
                       "artifacts", "wheel", "variants"), where)
    for key in ("name", "backend", "default_version", "versions"):
        if key not in data:
            raise RecipeError(f"{where}: missing required key {key!r}")
    versions = {
        str(version): _source(table.get("source", {}), f"{where}: versions.{version}.source",
                         path.parent if path else None)
        for version, table in data["versions"].items()
    }
    version_requires = {}
    version_backends = {}
    for version, table in data["versions"].items():
        _check_keys(table, ("source", "requires", "backend"), f"{where}: versions.{version}")
        if "requires" in table:
            version_requires[str(version)] = _requires(table["requires"], f"{where}: versions.{version}.requires")
        if "backend" in table:
            version_backends[str(version)] = str(table["backend"])
    native = {name: _native_build(data[name], f"{where}: {name}", settings)
              for name, settings in (("make", "variables"), ("cmake", "defines")) if name in data}
    for backend in {data["backend"], *version_backends.values()} & {"make", "cmake"}:
        if backend not in native:
            raise RecipeError(f"{where}: the {backend} backend needs a [{backend}] table")
    if data["default_version"] not in versions:
        raise RecipeError(f"{where}: default_version {data['default_version']!r} is not listed")

    build = data.get("build", {})
    _check_keys(build, ("job_memory_gb", "nvcc_threads", "env", "requirements", "kernels"), f"{where}: build")
    env = {str(k): str(v) for k, v in build.get("env", {}).items()}
    for key, value in env.items():
        _check_template(value, f"{where}: build.env.{key}")
    deps = data.get("deps", {})
    _check_keys(deps, ("drop", "pin_to_target", "rewrite", "companions"), f"{where}: deps")
    verify = data.get("verify", {})
    _check_keys(verify, ("imports", "extensions", "gpu_check", "artifact_check", "main_module"), f"{where}: verify")
    cc = data.get("cc", {})
    _check_keys(cc, ("outputs", "flags", "package"), f"{where}: cc")
    artifacts = data.get("artifacts")
    if artifacts is not None:
        _check_keys(artifacts, ("beside", "package"), f"{where}: artifacts")
    base = path.parent if path else shipped_dir("recipes")
    wheel = _wheel_build(data.get("wheel"), f"{where}: wheel", base)
    patches = []
    for index, table in enumerate(data.get("patches", [])):
        _check_keys(table, ("file", "when"), f"{where}: patches[{index}]")
        here = f"{where}: patches[{index}]"
        if "file" not in table:
            raise RecipeError(f"{here}: missing required key 'file'")
        patches.append(Patch(table["file"], _condition(table.get("when", {}), f"{here}.when"),
                             find_patch(str(table["file"]), base, here)))
    variants = parse_variants(data.get("variants", {}), where)
    variant_patch_paths = {file: find_patch(file, base, f"{where}: variants.{variant.name}")
                           for variant in variants.values() for file in variant.patches}

    return Recipe(
        name=data["name"],
        backend=data["backend"],
        default_version=data["default_version"],
        versions=versions,
        description=data.get("description", ""),
        requires=_requires(data.get("requires", {}), f"{where}: requires"),
        version_requires=version_requires,
        build=BuildSettings(
            job_memory_gb=float(build.get("job_memory_gb", 4.0)),
            nvcc_threads=int(build.get("nvcc_threads", 1)),
            env=env,
            requirements=tuple(build.get("requirements", ())),
            kernels=bool(build.get("kernels", True)),
        ),
        deps=_dep_rules(deps, where),
        patches=tuple(patches),
        verify=Verify(
            imports=tuple(verify.get("imports", ())),
            extensions=tuple(verify.get("extensions", ())),
            gpu_check=verify.get("gpu_check", ""),
            artifact_check=verify.get("artifact_check", ""),
            main_module=verify.get("main_module", ""),
        ),
        cc=CcBuild(outputs={str(k): tuple(v) for k, v in cc.get("outputs", {}).items()},
                   flags=tuple(cc.get("flags", ())), package=str(cc.get("package", ""))),
        native=native,
        version_backends=version_backends,
        artifacts=(Artifacts(beside=str(artifacts.get("beside", "")), package=str(artifacts.get("package", "")))
                   if artifacts is not None else None),
        wheel=wheel,
        path=path,
        variants=variants,
        variant_patch_paths=variant_patch_paths,
    )


def _dep_rules(deps: dict[str, Any], where: str) -> DepRules:
    rules = DepRules(drop=tuple(deps.get("drop", ())), pin_to_target=tuple(deps.get("pin_to_target", ())),
                     rewrite=tuple(deps.get("rewrite", ())), companions=tuple(deps.get("companions", ())))
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
