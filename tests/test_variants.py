"""Variant wheels (PEP 825) of stored builds, and uv 0.13.9 choosing among them by GPU and driver.

Real builds of the fixture against the running torch: sm_86 and sm_80 (tests/conftest.py
fixture_builds) and a third, sm_90 with PTX, made here into a copy of that cache. One torch is
practical on this machine (the other torch of tests/conftest.py fake_torch_venv cannot compile), so
the three builds differ in arch and in PTX, and the CUDA lower bound is exercised through the
driver uv is told of. uv runs with `--preview-features wheel-variants` and NVIDIA's provider's
overrides (NV_VARIANT_PROVIDER_FORCE_SM_ARCH, NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION), against
the local file tree and the real server on loopback; pip against the same root installs nothing.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.store.cache import Cache
from builder.store.variants import label_of
from builder.wheelfile import check_record, read_member
from tests.conftest import (
    ROOT,
    builder_json,
    fake_torch_venv,
    installed_version,
    installer_env,
    make_venv,
    run_builder,
    serving,
)

try:  # a real moto S3 server (tests/test_remote.py), where moto and boto3 are installed
    from tests.test_remote import BUCKET, moto_server  # noqa: F401 (a fixture, used by name)
except pytest.skip.Exception:
    BUCKET = ""

UV = str(Path(sys.executable).parent / "uv")
PEP_825_LABEL = re.compile(r"^[0-9a-z_.]{1,16}$")


def cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@pytest.fixture(scope="module")
def three_builds(tmp_path_factory: pytest.TempPathFactory, fixture_builds: dict[str, Any]) -> dict[str, Any]:
    """The fixture builds' cache copied, and an sm_90+PTX build added to it: {"cache", "86", "80", "90+PTX"}."""
    root = tmp_path_factory.mktemp("variants")
    cache = root / "cache"
    shutil.copytree(fixture_builds["cache"], cache, ignore=shutil.ignore_patterns("locks", "build", "staging"))
    ptx = builder_json("build", str(fixture_builds["recipe"]), "--arch", "9.0+PTX", "--no-install",
                       "--cache", str(cache))
    return {"cache": cache, "86": fixture_builds["86"], "80": fixture_builds["80"], "90+PTX": ptx}


@pytest.fixture(scope="module")
def served(three_builds: dict[str, Any]) -> Iterator[str]:
    with serving(three_builds["cache"]) as url:
        yield url


def variant_of(cache: Path, build: dict[str, Any]) -> dict[str, Any]:
    entry = json.loads((Path(build["wheel"]).parent / "entry.json").read_text())
    record = Cache(cache).get(entry["key"])
    assert record is not None
    return dict(record.meta["variant"])


def cuobjdump_lists(wheel: Path, option: str) -> set[str]:
    """What cuobjdump itself lists for the wheel's extension, run here independently of builder."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as archive:
        so = next(n for n in archive.namelist() if n.endswith(".so"))
        out = subprocess.run([cuobjdump(), option, archive.extract(so, tmp)], capture_output=True, text=True).stdout
    return set(re.findall(r"\bsm_(\d+)\b", out))


def test_each_build_has_a_variant_form_whose_properties_come_from_its_binary(three_builds: dict) -> None:
    expected = {"86": ("cu130sm86", ["86_real"]), "80": ("cu130sm80", ["80_real"]),
                "90+PTX": ("cu130sm90p", ["90_real", "90_virtual"])}
    for name, (label, sm_arch) in expected.items():
        build = three_builds[name]
        variant = variant_of(three_builds["cache"], build)
        plain = Path(build["wheel"])
        wheel = Cache(three_builds["cache"]).root / "entries" / plain.parent.name / variant["wheel"]
        assert variant["label"] == label and PEP_825_LABEL.match(label)
        assert variant["wheel"] == plain.name.replace(plain.name.split("-")[1], "0.1.0").removesuffix(".whl") \
            + f"-{label}.whl"
        reals, virtuals = cuobjdump_lists(wheel, "--list-elf"), cuobjdump_lists(wheel, "--list-ptx")
        assert sorted([f"{a}_real" for a in reals] + [f"{a}_virtual" for a in virtuals]) == sm_arch
        document = json.loads(read_member(wheel, "variant.json") or b"")
        assert document == {
            "$schema": "https://variants-schema.wheelnext.dev/peps/850/v0.2.0.json",
            "default-priorities": {"namespace": ["nvidia"]},
            "providers": {"nvidia": {"requires": ["nvidia-variant-provider>=0.0.1,<1.0.0"],
                                     "plugin-api": "nvidia_variant_provider.plugin:NvidiaVariantPlugin"}},
            "variants": {label: {"nvidia": {"cuda_version_lower_bound": ["13.0"], "sm_arch": sm_arch}}}}
        check_record(wheel)
        assert b"\nVersion: 0.1.0\n" in (read_member(wheel, "METADATA") or b"")
        assert variant["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
        with zipfile.ZipFile(plain) as a, zipfile.ZipFile(wheel) as b:
            payload = {n: a.read(n) for n in a.namelist() if ".dist-info/" not in n}
            assert payload == {n: b.read(n) for n in b.namelist() if ".dist-info/" not in n}


def test_labels_stay_within_the_pep_and_name_one_property_set() -> None:
    assert label_of("13.0", ["86_real"]) == "cu130sm86"
    assert label_of("12.8", ["80_real", "90_real", "90_virtual"]) == "cu128sm80_90p"
    many = [f"{a}_real" for a in (75, 80, 86, 89, 90, 100, 120)]
    long, other = label_of("13.0", many), label_of("13.0", [*many, "120_virtual"])
    assert PEP_825_LABEL.match(long) and len(long) == 16 and long.startswith("cu130x") and long != other
    assert label_of("13.0", list(reversed(many))) == long  # the set decides, not the order


def variants_root(python: Path, cache: Path, server: str | None = None) -> str:
    args = ["--server", server] if server else []
    return str(builder_json("index-url", "--variants", "--python", str(python), "--cache", str(cache), *args)["url"])


def test_the_variants_file_lists_every_build_and_follows_removal(three_builds: dict, served: str,
                                                                   tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    root = variants_root(python, three_builds["cache"])
    assert re.fullmatch(r"file://.*/variants/torch\d+(\.\d+)+/cu\d+/cxx11abiTRUE/simple/", root)
    served_root = variants_root(python, three_builds["cache"], served)
    assert served_root == f"{served}/variants/{root.split('/variants/', 1)[1]}"
    assert run_builder("index-url", "--variants", "--python", str(python), "--cache",
                       str(three_builds["cache"]), check=True).stdout.strip() == root
    folder = Path(root.removeprefix("file://")) / "fixture-ext"
    document = (folder / "fixture_ext-0.1.0-variants.json").read_text()
    assert sorted(json.loads(document)["variants"]) == ["cu130sm80", "cu130sm86", "cu130sm90p"]
    page = (folder / "index.html").read_text()
    assert f'href="fixture_ext-0.1.0-variants.json#sha256={hashlib.sha256(document.encode()).hexdigest()}"' in page
    assert page.count(".whl#sha256=") == 3

    with urllib.request.urlopen(served_root + "fixture-ext/fixture_ext-0.1.0-variants.json") as response:
        assert response.read().decode() == document
    request = urllib.request.Request(served_root + "fixture-ext/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request) as response:
        listed = {f["filename"]: f for f in json.load(response)["files"]}
    digest = hashlib.sha256(document.encode()).hexdigest()
    assert listed["fixture_ext-0.1.0-variants.json"]["hashes"]["sha256"] == digest
    with urllib.request.urlopen(served_root + "fixture-ext/") as response:
        assert response.read().decode() == page  # the server and the file tree give the same page

    copy = tmp_path / "copy"
    shutil.copytree(three_builds["cache"], copy, ignore=shutil.ignore_patterns("locks", "build", "staging"))
    key = Path(three_builds["80"]["wheel"]).parent.name
    run_builder("cache", "rm", key, "--cache", str(copy), check=True)
    after = Path(variants_root(python, copy).removeprefix("file://")) / "fixture-ext"
    assert sorted(json.loads((after / "fixture_ext-0.1.0-variants.json").read_text())["variants"]) == \
        ["cu130sm86", "cu130sm90p"]
    assert "cu130sm80.whl" not in (after / "index.html").read_text()


def served_variants_root(cache: Path, served: str) -> str:
    """The one variants root of the three builds, as the server gives it."""
    roots = [p.relative_to(cache).as_posix() for p in cache.glob("variants/*/*/*/simple")]
    assert len(roots) == 1, roots
    return f"{served}/{roots[0]}/"


def fetch(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request) as response:
        return bytes(response.read())


def wheel_metadata(wheel: bytes) -> bytes:
    """The METADATA inside a wheel, read with zipfile alone."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))


_LINK = re.compile(r'<a href="(?P<url>[^"#]+)#sha256=(?P<sha>[0-9a-f]{64})"(?P<attributes>[^>]*)>(?P<name>[^<]+)</a>')


def html_files(page: str) -> dict[str, dict[str, str]]:
    """The files of a PEP 503 project page: {filename: {"url", "sha256", and each data- attribute}}."""
    return {m["name"]: {"url": m["url"], "sha256": m["sha"], **dict(re.findall(r'(data-[\w-]+)="([^"]*)"',
                                                                               m["attributes"]))}
            for m in _LINK.finditer(page)}


def test_the_served_variants_pages_give_each_variant_wheel_its_own_core_metadata(three_builds: dict,
                                                                                served: str) -> None:
    """PEP 658 and PEP 714 on the variants root: the HTML and JSON pages name the sha256 of each
    variant wheel's METADATA, served at <wheel url>.metadata, byte for byte the wheel's own (the
    public version's, not the plain wheel's)."""
    page_url = served_variants_root(three_builds["cache"], served) + "fixture-ext/"
    in_html = html_files(fetch(page_url, "text/html").decode())
    in_json = {f["filename"]: f for f in json.loads(fetch(page_url, "application/vnd.pypi.simple.v1+json"))["files"]}
    wheels = sorted(n for n in in_json if n.endswith(".whl"))
    assert wheels == sorted(n for n in in_html if n.endswith(".whl")) and len(wheels) == 3, wheels
    for name in wheels:
        digest = in_json[name]["core-metadata"]["sha256"]
        assert in_json[name]["dist-info-metadata"] == {"sha256": digest}
        assert in_html[name]["data-core-metadata"] == in_html[name]["data-dist-info-metadata"] == f"sha256={digest}"
        assert in_json[name]["requires-python"] == html.unescape(in_html[name]["data-requires-python"]) == ">=3.9"
        url = urllib.parse.urljoin(page_url, in_json[name]["url"])
        assert url == urllib.parse.urljoin(page_url, html.unescape(in_html[name]["url"]))
        metadata, wheel = fetch(url + ".metadata"), fetch(url)
        assert hashlib.sha256(metadata).hexdigest() == digest
        assert metadata == wheel_metadata(wheel)
        assert b"\nVersion: 0.1.0\n" in metadata
        stored = Cache(three_builds["cache"]).get(url.split("/")[-2])
        assert stored is not None and stored.meta["variant"]["core_metadata_sha256"] == digest
        assert stored.meta["core_metadata_sha256"] != digest  # the plain wheel's METADATA has the local version
    variants_file = "fixture_ext-0.1.0-variants.json"
    assert in_json[variants_file]["core-metadata"] is False and "data-core-metadata" not in in_html[variants_file]


def test_uv_installs_from_the_served_variants_root_with_core_metadata(three_builds: dict, tmp_path: Path) -> None:
    """uv against the real server over the same cache: every request it made answered, and the
    chosen variant wheel's METADATA read from <wheel>.metadata before the wheel is downloaded."""
    requests: list[str] = []
    python = make_venv(tmp_path / "venv")
    with serving(three_builds["cache"], log=requests.append) as base:
        result = uv_install(python, served_variants_root(three_builds["cache"], base), "8.6")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_label(python) == "cu130sm86"
    assert requests and all(line.endswith(" 200") for line in requests), requests
    paths = [line.split()[1] for line in requests]
    wheel = next(p for p in paths if p.endswith("-cu130sm86.whl"))
    assert paths.index(f"{wheel}.metadata") < paths.index(wheel), paths  # it resolved from the PEP 658 file


def test_an_entry_stored_before_variant_metadata_is_listed_without_it(three_builds: dict, tmp_path: Path) -> None:
    """An entry whose variant record names no core metadata, and has no <variant wheel>.metadata
    (builder before PEP 658 for variant wheels): its wheel is listed without the attributes, the
    others keep theirs, the server answers, and uv still installs it."""
    copy = tmp_path / "copy"
    shutil.copytree(three_builds["cache"], copy, ignore=shutil.ignore_patterns("locks", "build", "staging"))
    key = Path(three_builds["80"]["wheel"]).parent.name
    entry_json = copy / "entries" / key / "entry.json"
    meta = json.loads(entry_json.read_text())
    old = meta["variant"]["wheel"]
    for field in ("core_metadata_sha256", "requires_python"):
        meta["variant"].pop(field)
    entry_json.write_text(json.dumps(meta, indent=2, sort_keys=True))
    (copy / "entries" / key / f"{old}.metadata").unlink()
    cache = Cache(copy)
    cache.write_index()
    python = make_venv(tmp_path / "venv")
    with serving(cache) as base:
        root = served_variants_root(copy, base)
        in_json = {f["filename"]: f
                   for f in json.loads(fetch(root + "fixture-ext/", "application/vnd.pypi.simple.v1+json"))["files"]}
        in_html = html_files(fetch(root + "fixture-ext/").decode())
        result = uv_install(python, root, "8.0")
    assert html_files((copy / root.split("/", 3)[3] / "fixture-ext" / "index.html").read_text()) == in_html
    assert in_json[old]["core-metadata"] is False and in_json[old]["dist-info-metadata"] is False
    assert "data-core-metadata" not in in_html[old] and "data-dist-info-metadata" not in in_html[old]
    others = [n for n in in_json if n.endswith(".whl") and n != old]
    assert len(others) == 2 and all(in_json[n]["core-metadata"] and "data-core-metadata" in in_html[n] for n in others)
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_label(python) == "cu130sm80"


def uv_install(python: Path, root: str, sm: str, driver: str = "13.0") -> subprocess.CompletedProcess[str]:
    env = {**installer_env(), "NV_VARIANT_PROVIDER_FORCE_SM_ARCH": sm,
           "NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION": driver}
    return subprocess.run([UV, "pip", "install", "--preview-features", "wheel-variants", "--no-cache",
                           "--python", str(python), "--index-url", root, "fixture-ext"],
                          capture_output=True, text=True, env=env, timeout=600)


def installed_label(python: Path) -> str | None:
    found = list(python.parent.parent.glob("lib/python*/site-packages/fixture_ext-*.dist-info/variant.json"))
    return next(iter(json.loads(found[0].read_text())["variants"])) if found else None


@pytest.mark.parametrize("where", ["file", "served"])
def test_uv_picks_the_build_for_the_gpu_and_driver_or_refuses(three_builds: dict, served: str, where: str,
                                                              tmp_path: Path) -> None:
    cases = [("8.6", "13.0", "cu130sm86"), ("8.0", "13.0", "cu130sm80"), ("9.0", "13.0", "cu130sm90p"),
             ("7.5", "13.0", None),   # no build has code for 7.5
             ("8.6", "12.8", None)]   # every build needs a CUDA 13.0 driver
    for sm, driver, label in cases:
        python = make_venv(tmp_path / f"sm{sm}-{driver}")
        root = variants_root(python, three_builds["cache"], served if where == "served" else None)
        result = uv_install(python, root, sm, driver)
        assert (result.returncode == 0) is (label is not None), (sm, driver, result.stdout + result.stderr)
        assert installed_label(python) == label, (sm, driver)
        if label is None:
            assert "only unsupported wheel variants" in result.stderr, result.stderr
            continue
        imported = subprocess.run([python, "-c", "import torch, fixture_ext_cuda, fixture_ext"],
                                  capture_output=True, text=True)
        assert imported.returncode == 0, imported.stderr


def test_another_torch_has_a_root_of_its_own_with_nothing_in_it(three_builds: dict, served: str,
                                                               tmp_path: Path) -> None:
    other = fake_torch_venv(tmp_path / "other")
    root = variants_root(other, three_builds["cache"], served)
    assert "/variants/torch2.8.0/cu128/cxx11abiTRUE/simple/" in root
    result = uv_install(other, root, "8.6")
    assert result.returncode != 0 and installed_version(other, "fixture-ext") is None, result.stderr
    assert installed_version(other, "torch") == "2.8.0+cu128"


def test_pip_at_the_variants_root_installs_nothing(three_builds: dict, served: str, pip_releases: dict,
                                                    tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    for root in (variants_root(python, three_builds["cache"]), variants_root(python, three_builds["cache"], served)):
        result = subprocess.run([str(python), str(pip_releases["current"] / "pip"), "install", "--no-cache-dir",
                                 "--index-url", root, "fixture-ext"],
                                capture_output=True, text=True, env=installer_env(), timeout=600)
        assert result.returncode != 0 and "No matching distribution found for fixture-ext" in result.stderr, \
            result.stdout + result.stderr
        assert installed_version(python, "fixture-ext") is None


def readme_uv_config() -> str:
    """The README's uv.toml lines for the variants root (the indented block that enables the preview)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index('    preview-features = ["wheel-variants"]')
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block) + "\n"


def test_the_readme_uv_config_installs_the_right_build(three_builds: dict, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    config = readme_uv_config()
    assert "builder index-url --variants" in (ROOT / "README.md").read_text()
    url = re.search(r'url = "([^"]+)"', config)
    assert url and "/variants/torch" in url[1], config
    config_file = tmp_path / "uv.toml"
    config_file.write_text(config.replace(url[1], variants_root(python, three_builds["cache"])))
    env = {**installer_env(), "NV_VARIANT_PROVIDER_FORCE_SM_ARCH": "8.0",
           "NV_VARIANT_PROVIDER_FORCE_CUDA_DRIVER_VERSION": "13.0"}
    env.pop("UV_NO_CONFIG")
    result = subprocess.run([UV, "pip", "install", "--config-file", str(config_file), "--no-cache", "--python",
                             str(python), "fixture-ext"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_label(python) == "cu130sm80"


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_a_shared_store_publishes_the_variants_root(three_builds: dict, kind: str, request: pytest.FixtureRequest,
                                                    tmp_path: Path) -> None:
    """`builder cache push` to a shared directory or a bucket (a real moto server on loopback,
    tests/test_remote.py) writes the variant wheels and the same variants pages as the local tree."""
    env: dict[str, str] = {}
    if kind == "s3":
        if not BUCKET:
            pytest.skip("needs moto and boto3")
        env = request.getfixturevalue("moto_server")["writer"]
    url = str(tmp_path / "shared") if kind == "dir" else f"s3://{BUCKET}/variants-test"
    run_builder("cache", "push", "--cache-url", url, "--cache", str(three_builds["cache"]), env=env, check=True)
    local = Path(variants_root(make_venv(tmp_path / "venv"), three_builds["cache"]).removeprefix("file://"))
    below = local.relative_to(three_builds["cache"].resolve())
    wanted = {f"{below}/fixture-ext/index.html", f"{below}/fixture-ext/fixture_ext-0.1.0-variants.json"}
    if kind == "dir":
        shared = tmp_path / "shared"
        read = {path: (shared / path).read_bytes() for path in wanted}
        wheels = {p.name for p in (shared / "entries").glob("*/*-cu130sm*.whl")}
        metadata = {p.relative_to(shared).as_posix(): p.read_bytes()
                    for p in (shared / "entries").glob("*/*-cu130sm*.whl.metadata")}
    else:
        import boto3

        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        prefix = "variants-test/"
        read = {path: client.get_object(Bucket=BUCKET, Key=prefix + path)["Body"].read() for path in wanted}
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "entries/")["Contents"]
        wheels = {o["Key"].rsplit("/", 1)[1] for o in listed if re.search(r"-cu130sm\w+\.whl$", o["Key"])}
        metadata = {o["Key"].removeprefix(prefix): client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                    for o in listed if re.search(r"-cu130sm\w+\.whl\.metadata$", o["Key"])}
    for path, data in read.items():
        assert data == (three_builds["cache"] / path).read_bytes(), path
    assert len(wheels) == 3, wheels
    assert len(metadata) == 3 and "data-core-metadata" in read[f"{below}/fixture-ext/index.html"].decode()
    for path, data in metadata.items():  # the PEP 658 file of each variant wheel, beside it as in the local cache
        assert data == (three_builds["cache"] / path).read_bytes(), path
