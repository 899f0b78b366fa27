"""Variant wheels (PEP 825) of stored builds, and the variants roots that serve them to uv.

Each stored build with GPU code gets a variant form beside its wheel, made when it is stored:

    entries/<key>/fixture_ext-0.1.0-cp311-cp311-manylinux_2_34_x86_64-cu130sm86.whl

the same files under the public version (PEP 825 selects among the wheels of *one* version; the
plain wheel's local label would make every build a version of its own), plus
`*.dist-info/variant.json` (PEP 825, "Variant metadata"). Its properties come from the binary and
the plan, never from the request:
  nvidia :: sm_arch                   NN_real for each cubin `cuobjdump --list-elf` lists in the
                                      wheel's shared objects, NN_virtual for each PTX `--list-ptx`
                                      lists (the values PyTorch's own variant wheels use)
  nvidia :: cuda_version_lower_bound  the toolkit that compiled it ("13.0" of nvcc 13.0.88): the
                                      driver must be at least that CUDA

The label is `cu<toolkit>sm<archs>`: each arch's digits, `p` after an arch that has PTX too, `v`
after one that has only PTX, joined by `_` (cu130sm86, cu130sm80_90p). PEP 825 ("Variant label",
python/peps peps/pep-0825.rst) allows `^[0-9a-z_.]{1,16}$` and one property set per label within a
version; a label that would be longer is `cu<toolkit>x` and the first hex digits of the
properties' sha256, 16 characters. The label is a function of the properties, so it is stable and
never names two property sets.

Both JSON files carry what uv 0.13.9 (`--preview-features wheel-variants`) needed in
/work/shared/DESIGN.md, "Measured 2026-12-06": the `$schema` of PEP 850's provider format, the
`nvidia` namespace first in `default-priorities`, and a `providers.nvidia` entry naming NVIDIA's
provider plugin, which uv implements itself (reading NVML, or NV_VARIANT_PROVIDER_FORCE_SM_ARCH and
NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION). Without `providers` in the wheel's own variant.json
uv refused the download ("requires unsupported properties").

torch is not a property. PEP 825 leaves ABI dependencies to a later PEP. uv 0.13.9 knows the word
(the strings of its binary put `abi_dependency` and `ProviderKind::Builtin`, beside `Static` and
`Plugin`, with crates/uv-distribution-types/src/variants_json.rs), but that release's source is
not in the snapshot of astral-sh/uv read here: main is at 0.12.5+79 (2026-08-21) without variants,
and its wheel-variant branches (charlie/wheel-variant, 2026-01, the newest) have no
`abi_dependency` at all; the prototype's PR, astral-sh/uv#12203, says "It does not implement
`abi_dependency` yet". What uv does was seen instead: a variant with `abi_dependency :: torch ::
2.14.1` (or `2.14`), `providers.abi_dependency = {"builtin": "abi_dependency"}` and the namespace in
`default-priorities`, offered to a venv whose own site-packages hold torch 2.14.1+cu130, was
refused ("only unsupported wheel variants"); `uv -v` says why: "Skipping unsupported wheel variant
provider `abi_dependency` for namespace `abi_dependency`". So uv cannot select on the torch a
target has, and a store serves one variants root per torch binary (its release, its CUDA and C++
ABI): builder/store/environments.py's Base without the Python tag, which the wheel's tags settle:

    variants/torch<release>/cu<torch's cuda>/cxx11abi<TRUE|FALSE>/simple/
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from builder.delivery.verify import find_cuobjdump as search
from builder.errors import BuildError, VerifyError
from builder.files import sha256_of
from builder.process import capture
from builder.store.environments import Base, base_of
from builder.store.retag import rebuild_wheel
from builder.wheelfile import open_wheel, read_member

SCHEMA = "https://variants-schema.wheelnext.dev/peps/850/v0.2.0.json"
NAMESPACE = "nvidia"
PROVIDER = {"requires": ["nvidia-variant-provider>=0.0.1,<1.0.0"],
            "plugin-api": "nvidia_variant_provider.plugin:NvidiaVariantPlugin"}
VARIANTS_SUFFIX = "-variants.json"  # PEP 825, "Index-level metadata": {name}-{version}-variants.json
MAX_LABEL = 16
_SM = re.compile(r"\bsm_(\d+[af]?)\b")
_LABEL = re.compile(r"^[0-9a-z_.]{1,16}$")


@dataclass(frozen=True, order=True)
class VariantsRoot:
    """One torch binary: the builds a variants root lists were all made against it."""

    torch: str
    cuda: str
    cxx11_abi: bool

    @property
    def path(self) -> str:
        """"variants/torch2.14.1/cu130/cxx11abiTRUE", without /simple/."""
        return f"variants/torch{self.torch}/{self.cuda}/cxx11abi{'TRUE' if self.cxx11_abi else 'FALSE'}"

    @classmethod
    def of(cls, base: Base) -> VariantsRoot:
        return cls(base.torch, base.cuda, base.cxx11_abi)

    @classmethod
    def from_path(cls, segments: list[str]) -> VariantsRoot | None:
        """The root the three segments after variants/ name, or None."""
        match = re.fullmatch(r"torch(\d+(?:\.\d+)+)/(cu\d+)/cxx11abi(TRUE|FALSE)", "/".join(segments))
        return cls(match[1], match[2], match[3] == "TRUE") if match else None


def arch_values(cuobjdump: Path, wheel: Path) -> list[str]:
    """nvidia :: sm_arch values of the wheel's shared objects: NN_real per cubin, NN_virtual per PTX."""
    found: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="builder-variant-") as tmp, open_wheel(wheel) as archive:
        for name in archive.namelist():
            if not (name.endswith(".so") or ".so." in name.rsplit("/", 1)[-1]):
                continue
            library = Path(archive.extract(name, tmp))
            for option, kind in (("--list-elf", "real"), ("--list-ptx", "virtual")):
                found |= {f"{m}_{kind}" for m in _listed(cuobjdump, option, library)}
    return sorted(found, key=lambda v: (int(re.match(r"\d+", v)[0]), v))  # type: ignore[index]


def _listed(cuobjdump: Path, option: str, library: Path) -> set[str]:
    result = capture([cuobjdump, option, library])
    text = result.stdout + result.stderr
    if result.returncode != 0 and "does not contain device code" not in text:
        raise VerifyError(f"cuobjdump {option} failed on {library.name}: {result.stderr.strip()}")
    return {m[1] for m in _SM.finditer(result.stdout)}


def cuda_lower_bound(meta: Mapping[str, Any]) -> str | None:
    """"13.0" for a build by nvcc 13.0.88: the toolkit's major.minor, from the entry's plan."""
    version = (((meta.get("plan") or {}).get("toolkit") or {}).get("version")) or ""
    match = re.match(r"^(\d+)\.(\d+)", str(version))
    return f"{match[1]}.{match[2]}" if match else None


def label_of(cuda: str, sm_arch: Iterable[str]) -> str:
    """The label of a property set: cu130sm86, cu130sm80_90p, else cu130x<sha256 digits>."""
    kinds: dict[str, set[str]] = {}
    for value in sm_arch:
        number, _, kind = value.partition("_")
        kinds.setdefault(number, set()).add(kind)
    tokens = [n + ("p" if k == {"real", "virtual"} else "v" if k == {"virtual"} else "")
              for n, k in kinds.items()]
    cu = "cu" + cuda.replace(".", "")
    label = f"{cu}sm{'_'.join(tokens)}"
    if len(label) > MAX_LABEL:
        digest = hashlib.sha256(json.dumps([cuda, sorted(sm_arch)]).encode()).hexdigest()
        label = f"{cu}x{digest}"[:MAX_LABEL]
    assert _LABEL.match(label), label
    return label


def properties(cuda: str, sm_arch: list[str]) -> dict[str, dict[str, list[str]]]:
    return {NAMESPACE: {"cuda_version_lower_bound": [cuda], "sm_arch": list(sm_arch)}}


def variants_document(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """variant.json (one label) or {name}-{version}-variants.json (every label of a version)."""
    return {"$schema": SCHEMA, "default-priorities": {"namespace": [NAMESPACE]},
            "providers": {NAMESPACE: PROVIDER}, "variants": {k: variants[k] for k in sorted(variants)}}


def variant_file_name(plain: str, label: str) -> tuple[str, str]:
    """(the variant wheel's file name, its public version) of a plain wheel name and a label."""
    name, version, *tags = plain.removesuffix(".whl").split("-")
    public = str(Version(version).public)
    return "-".join([name, public, *tags, label]) + ".whl", public


def _public_metadata(metadata: bytes, version: str) -> bytes:
    return re.sub(rb"(?m)^Version:[^\r\n]*", f"Version: {version}".encode(), metadata, count=1)


def make_variant(wheel: Path, meta: Mapping[str, Any], out_dir: Path, cuobjdump: Path) -> dict[str, Any] | None:
    """Write the variant form of a stored wheel into `out_dir`; its record for entry.json
    ({"wheel", "label", "properties", "sha256", "size"}, to which Cache.store adds what it records
    of the <variant wheel>.metadata it writes: "core_metadata_sha256", "requires_python"), or None
    for a build without GPU code or without a known toolkit."""
    cuda = cuda_lower_bound(meta)
    sm_arch = arch_values(cuobjdump, wheel)
    if cuda is None or not sm_arch:
        return None
    label = label_of(cuda, sm_arch)
    props = properties(cuda, sm_arch)
    filename, public = variant_file_name(wheel.name, label)
    stem = filename.split("-")[0] + f"-{public}"
    document = json.dumps(variants_document({label: props}), indent=2, sort_keys=True) + "\n"
    target = out_dir / filename
    rebuild_wheel(wheel, target, stem, {"METADATA": _public_metadata(read_member(wheel, "METADATA") or b"", public),
                                   "variant.json": document.encode()})
    return {"wheel": filename, "label": label, "properties": props, "sha256": sha256_of(target),
            "size": target.stat().st_size}


def find_cuobjdump(meta: Mapping[str, Any]) -> Path | None:
    """cuobjdump of the build's toolkit, else the one triton ships beside the target's torch,
    else PATH's (builder/delivery/verify.py's search)."""
    plan = meta.get("plan") or {}
    root = (plan.get("toolkit") or {}).get("root")
    python = Path(str((plan.get("target") or {}).get("python") or "python3"))
    try:
        return search(python if python.is_file() else Path(shutil.which("python3") or "python3"),
                      Path(root) / "bin" if root else None)
    except OSError:
        return None


def variant_record(wheel: Path, meta: Mapping[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """make_variant's record, for Cache.store to keep in entry.json as "variant", or None where no
    variant form can be made (no GPU code, no toolkit in the plan, no cuobjdump here)."""
    cuobjdump = find_cuobjdump(meta) if (meta.get("plan") or {}).get("archs") else None
    if cuobjdump is None:
        return None
    try:
        return make_variant(wheel, meta, out_dir, cuobjdump)
    except (BuildError, VerifyError, zipfile.BadZipFile):
        return None


def roots_of(metas: Iterable[Mapping[str, Any]]) -> list[VariantsRoot]:
    """Every variants root the entries' variant forms belong to."""
    return sorted({VariantsRoot.of(b) for m in metas if m.get("variant") and (b := base_of(m)) is not None})


def members(metas: Iterable[Mapping[str, Any]], root: VariantsRoot) -> list[dict[str, Any]]:
    """The variant records (entry.json's "variant": "wheel", "sha256", "size", ...) of the entries
    built against the root's torch, each with its entry's "key" and "created". Builds of
    non-default recipe variants stay in the plain roots: their properties would not tell them apart."""
    return [{**meta["variant"], "key": meta["key"], "created": meta.get("created", "")} for meta in metas
            if meta.get("variant") and (base := base_of(meta)) is not None and VariantsRoot.of(base) == root
            and not (meta.get("plan") or {}).get("variants")]


def variants_files(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """{name}-{version}-variants.json of each version the records hold, by file name: every label
    of that version's variant wheels (PEP 825's rule: the file lists every variant of the version)."""
    labels: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        name, version = str(record["wheel"]).split("-")[:2]
        labels.setdefault((name, version), {})[str(record["label"])] = record["properties"]
    return {f"{name}-{version}{VARIANTS_SUFFIX}": json.dumps(variants_document(found), indent=2, sort_keys=True) + "\n"
            for (name, version), found in sorted(labels.items())}
