"""Shared wheel caches: a directory, an S3-compatible bucket, or a read-only HTTP(S) index.

Every store has the published layout of a local cache:
  entries/<key>/entry.json   the entry's metadata, with the sha256 of its wheel; written last
  entries/<key>/<wheel>      the wheel, and <wheel>.metadata (its METADATA, PEP 658); the same
                             two of its variant wheel (builder/store/variants.py)
  index.json                 every entry's key, wheel and sha256 (how a store is listed)
  simple/, env/<...>/simple/ PEP 503 pages, over everything and per environment (pip --index-url,
                             when the store is served over HTTP; builder/store/index.py)
  variants/<...>/simple/     each torch's variant wheels (PEP 825) and variants files, for uv
                             (builder/store/variants.py); the variant wheel lies in its entry

A shared directory *is* a cache (builder.cache.Cache): its per-key lock and atomic renames make
concurrent writers safe. In a bucket, the wheel and entry.json are written with If-None-Match: *,
so of two writers of one key the first wins both objects and the second adopts them. Every
pulled wheel is checked against its entry's sha256 before it enters the local cache.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from builder.errors import CacheError, UsageError
from builder.files import sha256_of
from builder.store import index
from builder.store.cache import Cache, Entry, match_key

# Fields Cache.store writes itself; a pulled entry's metadata is stored without them.
STORED_FIELDS = ("key", "wheel", "sha256", "size", "created", "object", "core_metadata_sha256", "requires_python",
                 "variant")
HTTP_TIMEOUT_S = 30


class RemoteStore(Protocol):
    """What builder needs of a shared cache."""

    url: str
    writable: bool

    def entry(self, key: str) -> Mapping[str, Any] | None:
        """The key's entry.json, or None when the store does not have it."""

    def list_keys(self) -> list[str]:
        """Every key the store lists."""

    def download(self, meta: Mapping[str, Any], dest: Path) -> None:
        """Write the entry's wheel to `dest` (unchecked: pull checks it)."""

    def upload(self, entry: Entry) -> bool:
        """Store a local entry; False when the key was already there."""


def open_store(url: str) -> RemoteStore:
    """The store a --cache-url names: s3://bucket/prefix, http(s)://..., or a directory."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3Store(url)
    if parts.scheme in ("http", "https"):
        return HttpStore(url)
    if parts.scheme in ("", "file"):
        return DirStore(Path(parts.path if parts.scheme == "file" else url).expanduser())
    raise UsageError(f"unknown cache URL scheme {parts.scheme!r} in {url}",
                     hint="use a directory, s3://bucket/prefix or http(s)://host/path")


def pull(store: RemoteStore, key: str, cache: Cache) -> Entry | None:
    """The remote entry, checked against its sha256, stored in the local cache; None if absent."""
    meta = store.entry(key)
    if meta is None:
        return None
    with tempfile.TemporaryDirectory(dir=cache.dir("staging")) as tmp:
        wheel = Path(tmp) / str(meta["wheel"])
        store.download(meta, wheel)
        actual = sha256_of(wheel)
        if actual != meta["sha256"]:
            raise CacheError(f"refused {meta['wheel']} from {store.url}: sha256 {actual}, "
                             f"its entry says {meta['sha256']}",
                             hint="the shared copy is corrupt or was replaced; remove it there and build again")
        return cache.store(key, wheel, {k: v for k, v in meta.items() if k not in STORED_FIELDS})


def push(store: RemoteStore, entry: Entry, cache: Cache) -> bool:
    """Upload a local entry after re-checking its wheel; False when the store had the key."""
    if not store.writable:
        raise UsageError(f"{store.url} is read-only", hint="push to a directory or an s3:// bucket")
    cache.verified_wheel(entry)
    return store.upload(entry)


def sync(store: RemoteStore, cache: Cache) -> dict[str, list[str]]:
    """Pull what only the store has; push what only the local cache has (when writable)."""
    remote = set(store.list_keys())
    local = {e.key: e for e in cache.entries()}
    pulled = [k for k in sorted(remote - set(local)) if pull(store, k, cache) is not None]
    pushed = [k for k in sorted(set(local) - remote) if store.writable and push(store, local[k], cache)]
    return {"pulled": pulled, "pushed": pushed}


class DirStore:
    """A shared directory (NFS, a mounted volume): a cache of its own, locks included."""

    writable = True

    def __init__(self, root: Path) -> None:
        self.url = str(root)
        self.cache = Cache(root)

    def entry(self, key: str) -> Mapping[str, Any] | None:
        found = self.cache.get(key) if self._exists() else None
        return found.meta if found else None

    def list_keys(self) -> list[str]:
        return [e.key for e in self.cache.entries()] if self._exists() else []

    def download(self, meta: Mapping[str, Any], dest: Path) -> None:
        shutil.copyfile(self.cache.root / "entries" / str(meta["key"]) / str(meta["wheel"]), dest)

    def upload(self, entry: Entry) -> bool:
        self._exists()
        try:
            with self.cache.lock(entry.key):
                if self.cache.get(entry.key) is not None:
                    return False
                self.cache.store(entry.key, entry.wheel, {k: v for k, v in entry.meta.items()
                                                          if k not in STORED_FIELDS})
        except OSError as exc:
            raise CacheError(f"cannot write to the shared cache {self.url}: {exc.strerror or exc}") from exc
        return True

    def _exists(self) -> bool:
        """Whether the directory exists yet; one whose parent exists is a new, empty store (the
        first push creates it), one whose parent is missing is an error (an unmounted volume)."""
        root = self.cache.root
        if not root.is_dir() and not root.parent.is_dir():
            raise CacheError(f"the shared cache directory {root} does not exist, nor its parent",
                             hint="create it, or check that the shared volume is mounted")
        return root.is_dir()


class HttpStore:
    """A read-only store over HTTP(S): `builder cache serve`, or any web server over a store."""

    writable = False

    def __init__(self, url: str) -> None:
        base = url.rstrip("/")
        self.base = base.removesuffix("/simple")
        self.url = url

    def entry(self, key: str) -> Mapping[str, Any] | None:
        data = self._get(f"entries/{key}/entry.json")
        return None if data is None else dict(json.loads(data))

    def list_keys(self) -> list[str]:
        data = self._get("index.json")
        return [] if data is None else [str(e["key"]) for e in json.loads(data)["entries"]]

    def download(self, meta: Mapping[str, Any], dest: Path) -> None:
        path = f"entries/{meta['key']}/{meta['wheel']}"
        try:
            with urllib.request.urlopen(f"{self.base}/{path}", timeout=HTTP_TIMEOUT_S) as response, \
                    dest.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as exc:
            raise CacheError(f"cannot download {self.base}/{path}: {_reason(exc)}") from exc

    def upload(self, entry: Entry) -> bool:  # pragma: no cover - push refuses read-only stores first
        raise UsageError(f"{self.url} is read-only")

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(f"{self.base}/{path}", timeout=HTTP_TIMEOUT_S) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise CacheError(f"{self.base}/{path} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CacheError(f"cannot reach the shared cache {self.base}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


class S3Store:
    """An S3-compatible bucket. Credentials, region and endpoint come from boto3's usual sources;
    AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) points it at MinIO and friends."""

    writable = True

    def __init__(self, url: str) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise UsageError("s3:// cache URLs need boto3", hint="pip install 'builder[s3]'") from exc
        parts = urlsplit(url)
        if not parts.netloc:
            raise UsageError(f"{url} names no bucket", hint="use s3://bucket/prefix")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=60)
        self.client = boto3.client("s3", config=config)

    def entry(self, key: str) -> Mapping[str, Any] | None:
        data = self._read(f"entries/{key}/entry.json")
        return None if data is None else dict(json.loads(data))

    def list_keys(self) -> list[str]:
        data = self._read("index.json")
        return [] if data is None else [str(e["key"]) for e in json.loads(data)["entries"]]

    def download(self, meta: Mapping[str, Any], dest: Path) -> None:
        self._call("download", lambda: self.client.download_file(
            self.bucket, self._key(f"entries/{meta['key']}/{meta['wheel']}"), str(dest)))

    def upload(self, entry: Entry) -> bool:
        """The wheel, then entry.json, each only if absent: the first writer of a key wins, and a
        later one writes (or finds) an entry.json that describes the winning wheel."""
        if self.entry(entry.key) is not None:
            return False
        wheel_key = f"entries/{entry.key}/{entry.wheel.name}"
        meta = {k: v for k, v in entry.meta.items() if k != "object"}
        if self._put_new(wheel_key, entry.wheel, checksum=True):
            meta = self._put_metadata(wheel_key, entry.wheel, meta)  # only the wheel's writer writes it
        else:
            head = self._call("read", lambda: self.client.head_object(
                Bucket=self.bucket, Key=self._key(wheel_key), ChecksumMode="ENABLED"))
            meta["sha256"] = base64.b64decode(head["ChecksumSHA256"]).hex()
            meta["size"] = head["ContentLength"]
            meta.pop("core_metadata_sha256", None)  # another writer's wheel: its metadata file is that writer's
        variant = entry.path / str((meta.get("variant") or {}).get("wheel", ""))
        variant_key = f"entries/{entry.key}/{variant.name}"
        if meta.get("variant") and variant.is_file() and self._put_new(variant_key, variant, checksum=True):
            meta["variant"] = self._put_metadata(variant_key, variant, meta["variant"])
        else:
            meta.pop("variant", None)  # only the writer of the variant wheel (builder/store/variants.py) lists it
        wrote = self._put_new(f"entries/{entry.key}/entry.json", json.dumps(meta, indent=2).encode())
        self.write_index()
        return wrote

    def _put_metadata(self, wheel_key: str, wheel: Path, record: Mapping[str, Any]) -> dict[str, Any]:
        """Put the <wheel>.metadata (PEP 658) stored beside a wheel this writer put; the wheel's
        record (the entry, or its "variant"), without "core_metadata_sha256" where the entry has
        no such file (one stored before builder wrote it), so no page promises what is absent."""
        metadata = wheel.with_name(f"{wheel.name}{index.METADATA_SUFFIX}")
        if metadata.is_file() and "core_metadata_sha256" in record:
            self._put(f"{wheel_key}{index.METADATA_SUFFIX}", metadata.read_bytes(), "text/plain")
            return dict(record)
        return {k: v for k, v in record.items() if k != "core_metadata_sha256"}

    def write_index(self) -> None:
        """index.json and the pages (index.published_pages) from the entries listed now; rewritten
        until a fresh listing matches what was written, so concurrent pushes end with an index
        naming all."""
        written: set[str] | None = None
        for _ in range(5):
            listed = self._listed_keys()
            if listed == written:
                return
            metas = [m for m in (self.entry(k) for k in sorted(listed)) if m is not None]
            for path, page in index.published_pages(metas).items():
                self._put(path, page.encode(), "application/json" if path.endswith(".json") else "text/html")
            self._put("index.json", index.entries_json(metas).encode(), "application/json")
            written = listed

    def _listed_keys(self) -> set[str]:
        def listing() -> set[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key("entries/"))
            names = (obj["Key"] for page in pages for obj in page.get("Contents", []))
            return {n.split("/")[-2] for n in names if n.endswith("/entry.json")}
        return set(self._call("list", listing))

    def _key(self, path: str) -> str:
        return self.prefix + path

    def _read(self, path: str) -> bytes | None:
        from botocore.exceptions import ClientError
        try:
            response = self._call("read", lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(path)),
                                  passthrough=ClientError)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise self._error("read", exc) from exc
        return bytes(response["Body"].read())

    def _put(self, path: str, body: bytes, content_type: str) -> None:
        self._call("write", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self._key(path), Body=body, ContentType=content_type))

    def _put_new(self, path: str, body: bytes | Path, *, checksum: bool = False) -> bool:
        """Write only if absent; False when another writer was first (HTTP 412)."""
        from botocore.exceptions import ClientError
        extra = {"ChecksumAlgorithm": "SHA256"} if checksum else {}

        def put() -> Any:
            if isinstance(body, bytes):
                return self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=body,
                                              IfNoneMatch="*", **extra)
            with body.open("rb") as handle:
                return self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=handle,
                                              IfNoneMatch="*", **extra)
        try:
            self._call("write", put, passthrough=ClientError)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise self._error("write", exc) from exc
        return True

    def _call(self, what: str, action: Any, passthrough: type[Exception] | None = None) -> Any:
        """Run one S3 call; its failures become one CacheError line (`passthrough` is re-raised)."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return action()
        except Exception as exc:
            if passthrough is not None and isinstance(exc, passthrough):
                raise
            if isinstance(exc, (BotoCoreError, ClientError)):
                raise self._error(what, exc) from exc
            raise

    def _error(self, what: str, exc: Exception) -> CacheError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return CacheError(f"no permission to {what} s3://{self.bucket}/{self.prefix} ({code})",
                              hint="check the credentials and the bucket policy")
        if code in ("NoSuchBucket",):
            return CacheError(f"the bucket {self.bucket} does not exist", hint="create it, or fix the URL")
        return CacheError(f"cannot {what} {self.url}: {exc}",
                          hint="check AWS_ENDPOINT_URL_S3, the network and the credentials")


def find_key(store: RemoteStore, prefix: str) -> str:
    """The key in `store` that a whole key or a unique prefix names."""
    return match_key(store.list_keys(), prefix, store.url)
