"""Shared caches for real: a directory, a moto S3 server on loopback (server mode, over HTTP),
`builder cache serve` answering pip and uv, and builds that pull from and push to them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.files import sha256_of
from builder.store.cache import Cache, Entry
from tests.conftest import ROOT, FixtureBuild, builder_json, cache_serve, make_venv, run_builder

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

BUCKET = "builder-shared"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAADMIN", "AWS_SECRET_ACCESS_KEY": "admin-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")



def iam_user(iam: Any, name: str, actions: list[str], endpoint: str) -> dict[str, str]:
    """An IAM user allowed `actions` on every bucket; the env that makes builder act as it."""
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint}


@pytest.fixture(scope="module")
def moto_server() -> Iterator[dict[str, dict[str, str]]]:
    """A real moto S3 + IAM server in its own process, with a bucket, a writer and a read-only
    user. IAM is enforced after the 7 set-up calls (INITIAL_NO_AUTH_ACTION_COUNT)."""
    port = free_port()
    env = {**os.environ, **CREDENTIALS, "INITIAL_NO_AUTH_ACTION_COUNT": "7"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        endpoint = f"http://127.0.0.1:{port}"
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
        boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **admin)
        yield {"writer": iam_user(iam, "writer", ["s3:*"], endpoint),
               "reader": iam_user(iam, "reader", ["s3:GetObject", "s3:ListBucket"], endpoint)}
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def built(fixture_build: FixtureBuild) -> dict[str, Any]:
    """The session's one real sm_86 build of the fixture (tests/conftest.py), made with --cache-url
    pointing at a shared directory (a miss there: it compiled, stored locally, uploaded)."""
    return {"root": fixture_build.root, "recipe": fixture_build.recipe, "local": fixture_build.cache,
            "shared": fixture_build.shared, "result": fixture_build.result}


def copy_cache(source: Path, dest: Path) -> Cache:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("locks", "envs", "build", "staging"))
    return Cache(dest)


def entry_of(cache: Cache, key: str) -> Entry:
    entry = cache.get(key)
    assert entry is not None
    return entry


def test_build_uploads_and_a_second_machine_pulls_instead_of_compiling(built: dict, tmp_path: Path) -> None:
    first = built["result"]
    assert first["cache_hit"] is False
    assert first["remote"] == {"url": str(built["shared"]), "pulled": False, "pushed": True}
    shared = Cache(built["shared"])
    assert [e.key for e in shared.entries()] == [first["cache_key"]]
    second = builder_json("build", str(built["recipe"]), "--arch", "86", "--no-install",
                          "--cache", str(tmp_path / "other"), "--cache-url", str(built["shared"]))
    assert second["cache_hit"] is True and second["origin"] == str(built["shared"])
    assert second["sha256"] == first["sha256"]
    assert not list((tmp_path / "other").glob("logs/fixture-ext-*.log"))  # nothing compiled


@pytest.mark.parametrize("kind", ["dir", "s3"])
def test_two_processes_pushing_one_key_leave_one_object_and_a_valid_index(
        built: dict, kind: str, moto_server: dict, tmp_path: Path) -> None:
    key = built["result"]["cache_key"]
    pushers = []
    for name in ("a", "b"):  # the same key built twice: same files, different bytes
        cache = copy_cache(built["local"], tmp_path / name)
        wheel = tmp_path / entry_of(cache, key).wheel.name
        shutil.copy(entry_of(cache, key).wheel, wheel)
        with zipfile.ZipFile(wheel, "a") as archive:
            archive.comment = f"built by {name}".encode()
        cache.store(key, wheel, {"recipe": "fixture-ext", "version": "0.1.0"})
        pushers.append(cache)
    assert entry_of(pushers[0], key).sha256 != entry_of(pushers[1], key).sha256
    url = str(tmp_path / "shared") if kind == "dir" else f"s3://{BUCKET}/race-{kind}"
    env = {**os.environ, **moto_server["writer"]}
    processes = [subprocess.Popen([sys.executable, "-m", "builder", "cache", "push", key, "--cache-url", url,
                                   "--cache", str(c.root), "--json"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in pushers]
    outcomes = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), outcomes
    pushed = [json.loads(out)["pushed"] for out, _ in outcomes]
    assert sorted(map(len, pushed)) == [0, 1]  # one writer won, the other found the key there

    fresh = Cache(tmp_path / "fresh")
    pulled = builder_json("cache", "pull", "--cache-url", url, "--cache", str(fresh.root), env=moto_server["writer"])
    assert pulled["pulled"] == [key]  # sha256-checked on the way in
    winner = entry_of(fresh, key)
    assert winner.sha256 in {entry_of(c, key).sha256 for c in pushers}
    index, wheels = remote_listing(url, moto_server["writer"])
    assert [e["key"] for e in index["entries"]] == [key] and index["entries"][0]["sha256"] == winner.sha256
    assert wheels == [winner.wheel.name]


def remote_listing(url: str, env: dict[str, str]) -> tuple[dict, list[str]]:
    """A store's index.json and wheel objects, read without builder; its PEP 503 page names the
    indexed sha256."""
    if not url.startswith("s3://"):
        root = Path(url)
        page = (root / "simple" / "fixture-ext" / "index.html").read_text()
        index = json.loads((root / "index.json").read_text())
        wheels = [p.name for p in root.glob("entries/*/*.whl")]
    else:
        bucket, prefix = url[5:].split("/", 1)
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                              aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        index = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/index.json")["Body"].read())
        objects = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/entries/")["Contents"]
        page = client.get_object(Bucket=bucket, Key=f"{prefix}/simple/fixture-ext/index.html")["Body"].read().decode()
        wheels = [o["Key"].rsplit("/", 1)[1] for o in objects if o["Key"].endswith(".whl")]
    assert f"#sha256={index['entries'][0]['sha256']}" in page
    return index, wheels


def test_a_flipped_byte_is_refused_on_pull_and_quarantined_by_verify(built: dict, tmp_path: Path) -> None:
    shared = copy_cache(built["shared"], tmp_path / "shared")
    [entry] = shared.entries()
    data = bytearray(entry.wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.wheel.write_bytes(bytes(data))
    result = run_builder("cache", "pull", "--cache-url", str(shared.root), "--cache", str(tmp_path / "local"))
    assert result.returncode == 9, result.stderr
    assert "refused" in result.stderr and "sha256" in result.stderr
    assert Cache(tmp_path / "local").entries() == []
    verified = run_builder("cache", "verify", "--cache", str(shared.root), "--json")
    assert verified.returncode == 9 and json.loads(verified.stdout)["quarantined"] == [entry.key]
    assert json.loads((shared.root / "index.json").read_text())["entries"] == []


@pytest.fixture
def served(built: dict) -> Iterator[str]:
    """`builder cache serve --port 0` over the build's local cache; yields its /simple/ URL."""
    with cache_serve("--cache", str(built["local"])) as simple:
        yield simple


def local_version(built: dict) -> str:
    return Path(built["result"]["wheel"]).name.split("-")[1]


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_pip_and_uv_install_from_cache_serve(built: dict, served: str, installer: str, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    requirement = f"fixture-ext=={local_version(built)}"
    if installer == "pip":
        command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                   "--index-url", served, requirement]
    else:
        command = [str(Path(sys.executable).parent / "uv"), "pip", "install", "--python", str(python),
                   "--no-deps", "--index-url", served, requirement]
    subprocess.run(command, check=True, capture_output=True, text=True)
    code = "import torch, fixture_ext, importlib.metadata as m; print(m.version('fixture-ext'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == local_version(built)


def test_serve_answers_pep691_json_and_works_as_a_read_only_cache_url(built: dict, served: str,
                                                                      tmp_path: Path) -> None:
    request = urllib.request.Request(served + "fixture-ext/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
        page = json.loads(response.read())
    [listed] = page["files"]
    assert listed["hashes"]["sha256"] == built["result"]["sha256"]
    with urllib.request.urlopen(served + "Fixture_Ext/") as response:
        assert response.url.endswith("/simple/fixture-ext/")  # PEP 503 normalisation by redirect
    pulled = builder_json("cache", "pull", "--cache-url", served, "--cache", str(tmp_path / "c"))
    assert pulled["pulled"] == [built["result"]["cache_key"]]
    assert sha256_of(Cache(tmp_path / "c").entries()[0].wheel) == built["result"]["sha256"]
    refused = run_builder("cache", "push", "--cache-url", served, "--cache", str(built["local"]))
    assert refused.returncode == 2 and "read-only" in refused.stderr


def test_unreachable_cache_url_warns_and_the_local_build_stays_usable(built: dict, tmp_path: Path) -> None:
    local = copy_cache(built["local"], tmp_path / "local")
    dead = f"http://127.0.0.1:{free_port()}"
    hit = builder_json("build", str(built["recipe"]), "--arch", "86", "--no-install", "--cache", str(local.root),
                       "--cache-url", f"{dead}/simple/")
    assert hit["cache_hit"] is True and hit["origin"] == "local cache"
    fresh = builder_json("cache", "pull", "--cache-url", str(built["shared"]), "--cache", str(tmp_path / "fresh"))
    assert fresh["pulled"]
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL_S3": dead}
    failed = run_builder("build", str(built["recipe"]), "--arch", "86", "--no-install", "--cache", str(local.root),
                         "--cache-url", f"s3://{BUCKET}/x", env=env)
    assert failed.returncode == 9, failed.stderr
    assert "built and stored locally" in failed.stderr and "builder cache push" in failed.stderr
    assert local.get(built["result"]["cache_key"]) is not None


def test_a_bucket_without_write_permission_is_one_clear_line(built: dict, moto_server: dict) -> None:
    result = run_builder("cache", "push", "--cache-url", f"s3://{BUCKET}/denied", "--cache", str(built["local"]),
                         env=moto_server["reader"])
    assert result.returncode == 9, result.stderr
    assert f"no permission to write s3://{BUCKET}/denied/" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_cache_urls(tmp_path: Path) -> None:
    result = run_builder("cache", "pull", "--cache-url", "ftp://host/x", "--cache", str(tmp_path))
    assert result.returncode == 2 and "unknown cache URL scheme 'ftp'" in result.stderr
    result = run_builder("cache", "pull", "--cache-url", str(tmp_path / "nope" / "deeper"), "--cache", str(tmp_path))
    assert result.returncode == 9 and "does not exist" in result.stderr


def test_a_compile_cache_on_s3_gives_a_fresh_machine_the_device_steps(
        fixture_recipe: Path, moto_server: dict, tmp_path: Path) -> None:
    """compile-cache auto beside an s3:// cache-url: a build in a fresh local cache stores its
    compiled steps under the bucket's compile/ prefix; a rebuild of that key from another fresh
    cache (a new machine, a CI cell re-run; --force, so the wheel is not simply pulled) compiles
    nothing: its sccache finds every step there, the device code (PTX, CUBIN) too. The compile
    cache is no part of the key."""
    url, env = f"s3://{BUCKET}/team", moto_server["writer"]
    args = ("build", str(fixture_recipe), "--arch", "86", "--no-install", "--cache-url", url,
            "--compile-cache", "auto")
    first = builder_json(*args, "--cache", str(tmp_path / "first"), env=env)
    assert first["plan"]["compile_cache"] == f"{url}/compile" and first["plan"]["ccache"] is True
    assert first["sccache"]["misses"].get("CUBIN") == 3 and not first["sccache"]["hits"]
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    stored = client.list_objects_v2(Bucket=BUCKET, Prefix="team/compile/")
    assert stored["KeyCount"] >= 13, stored  # 3 x (PTX, CUBIN, CUDA, device code) + the host compile

    second = builder_json(*args, "--force", "--cache", str(tmp_path / "second"), env=env)
    assert second["sccache"]["hits"] == {"CUBIN": 3, "PTX": 3, "CUDA": 3, "CUDA (Device code)": 3, "C/C++": 1}
    assert not second["sccache"]["misses"]
    plain = builder_json("plan", str(fixture_recipe), "--arch", "86", "--cache", str(tmp_path / "first"))
    assert first["cache_key"] == second["cache_key"] == plain["cache_key"]
