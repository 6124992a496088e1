"""BlobStore on an S3-compatible object store: streamed multipart uploads that appear only when completed.

`blob_url = s3://BUCKET[/PREFIX][?endpoint=http://host:port&region=NAME]`. Credentials never come from the URL
(one with a user or password is refused): boto3 finds them as it always does, in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), AWS_PROFILE and ~/.aws, or an instance or container role.
`endpoint` names a non-AWS server (SeaweedFS, MinIO, Ceph...), which is then addressed path-style.

A writer's temporary is its multipart upload: nothing is visible under the key until CompleteMultipartUpload
(or, for a blob smaller than one part, the single PutObject at commit) returns, and the store acknowledges
that only once the object is durable. Every part and every PutObject carries a Content-MD5 that the server
checks. boto3 is synchronous: every call runs on the store's own thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from inhouse import observability

_KEY = re.compile(r"^[a-z]+(/[A-Za-z0-9_-]+)+$")  # the local store's: keys are the same on every backend
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
PART_SIZE = 8 * 1024 * 1024  # S3 wants >= 5 MiB for every part but the last; 8 MiB keeps 10,000 parts > 78 GiB
_THREADS = 16
_PARTS_IN_FLIGHT = 3  # per writer: boto3's transfers send 10, but each part in flight holds PART_SIZE of memory
_T = TypeVar("_T")


def parse_s3_url(url: str) -> dict[str, str | None]:
    """bucket, prefix, endpoint and region from `s3://bucket/prefix?endpoint=...&region=...`."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.hostname:
        raise ValueError(f"invalid blob_url {url!r}: expected s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME]")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError("blob_url must not carry credentials: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                         "(or an AWS profile or role) instead")
    query = parse_qs(parsed.query, keep_blank_values=True, strict_parsing=False)
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise ValueError(f"unsupported blob_url parameter(s) {sorted(unknown)}: s3:// takes endpoint and region")
    prefix = parsed.path.strip("/")
    if prefix and (not _PREFIX.match(prefix) or {".", ".."} & set(prefix.split("/"))):
        raise ValueError(f"invalid blob_url prefix {prefix!r}")
    return {
        "bucket": parsed.netloc,
        "prefix": prefix,
        "endpoint": query["endpoint"][-1] if "endpoint" in query else None,
        "region": query["region"][-1] if "region" in query else None,
    }


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _missing(exc: BaseException) -> bool:
    return _error_code(exc) in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class S3BlobWriter:
    """Buffers up to one part; full parts are uploaded off the loop, up to _PARTS_IN_FLIGHT at once (as boto3's
    own transfers do: one request at a time leaves a stream as slow as one request), while the next part fills.
    Memory stays within _PARTS_IN_FLIGHT + 1 parts. The multipart upload starts with the first full part."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = store.object_key(key)
        self._hash = hashlib.sha256()
        self._size = 0
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []  # appended as parts finish, in any order; sorted to complete
        self._next_part = 1
        self._inflight: collections.deque[asyncio.Future[None]] = collections.deque()  # part uploads, oldest first
        self._hashing: asyncio.Future[None] | None = None  # the newest part's sha256 update
        self._done = False

    def _create_sync(self) -> None:
        self._upload_id = self._store.client.create_multipart_upload(Bucket=self._store.bucket,
                                                                     Key=self._key)["UploadId"]
        self._store.live_uploads[self._upload_id] = self

    def _upload_part_sync(self, number: int, data: bytes) -> None:
        etag = self._store.client.upload_part(Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id,
                                              PartNumber=number, Body=data, ContentMD5=_md5(data))["ETag"]
        self._parts.append({"ETag": etag, "PartNumber": number})

    async def _wait_inflight(self) -> None:
        """Until every part sent so far is hashed and uploaded; raises the first part's error, if any."""
        pending = [*self._inflight, *([self._hashing] if self._hashing is not None else [])]
        self._inflight.clear()
        self._hashing = None
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, Exception):
                raise result

    async def _send_part(self) -> None:
        data, self._buf = bytes(self._buf), bytearray()
        if self._upload_id is None:
            await self._store.submit(self._create_sync)
        # The hash takes parts one at a time, in order: a part's update starts once the previous one's is done.
        if self._hashing is not None:
            await self._hashing
        self._hashing = self._store.submit(self._hash.update, data)
        while len(self._inflight) >= _PARTS_IN_FLIGHT:
            await self._inflight[0]  # popped only once done, so an abort still waits for it if this is cancelled
            self._inflight.popleft()
        number, self._next_part = self._next_part, self._next_part + 1
        self._inflight.append(self._store.submit(self._upload_part_sync, number, data))

    async def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("blob writer already committed or aborted")
        if not data:
            return
        self._size += len(data)
        self._buf += data
        if len(self._buf) >= self._store.part_size:
            await self._send_part()

    def _put_sync(self, data: bytes) -> None:
        self._hash.update(data)
        self._store.client.put_object(Bucket=self._store.bucket, Key=self._key, Body=data, ContentMD5=_md5(data))

    def _complete_sync(self, last: bytes) -> None:
        if last:
            self._hash.update(last)  # every earlier part is hashed and uploaded (commit waited for them)
            self._upload_part_sync(self._next_part, last)
        self._store.client.complete_multipart_upload(
            Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda part: int(part["PartNumber"]))})

    async def commit(self) -> tuple[int, str]:
        """Make the object appear under its key, durable; only then may a metadata row point at it."""
        if self._done:
            raise RuntimeError("blob writer already committed or aborted")
        try:
            await self._wait_inflight()
            last, self._buf = bytes(self._buf), bytearray()
            if self._upload_id is None:
                await self._store.submit(self._put_sync, last)  # smaller than one part: one request
            else:
                await self._store.submit(self._complete_sync, last)
        except BaseException:
            await self.abort()
            raise
        self._done = True
        if self._upload_id is not None:
            self._store.live_uploads.pop(self._upload_id, None)
        observability.BLOB_WRITTEN_BYTES.inc(self._size)
        return self._size, self._hash.hexdigest()

    def _abort_sync(self) -> None:
        if self._upload_id is not None:
            try:
                self._store.client.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key,
                                                          UploadId=self._upload_id)
            except Exception as exc:
                if not _missing(exc):  # already aborted (by the sweeper) or completed: nothing left to drop
                    raise
            self._store.live_uploads.pop(self._upload_id, None)

    async def abort(self) -> None:
        self._done = True
        self._buf = bytearray()
        with contextlib.suppress(Exception):
            await self._wait_inflight()  # its part (and maybe the upload) must exist before the abort drops it
        await self._store.submit(self._abort_sync)


class S3BlobStore:
    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None, region: str | None = None,
                 part_size: int = PART_SIZE) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.part_size = part_size
        # Upload ids of this process's writers that are still open: the sweeper never aborts those. Weak, so
        # a writer dropped without commit or abort (a bug, or its task killed) leaves a temporary to sweep.
        self.live_uploads: weakref.WeakValueDictionary[str, S3BlobWriter] = weakref.WeakValueDictionary()
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        p = parse_s3_url(url)
        return cls(str(p["bucket"]), p["prefix"] or "", endpoint=p["endpoint"], region=p["region"])

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3BlobStore used before open()")
        return self._client

    def object_key(self, key: str) -> str:
        # Keys are built by services from our own ids; the check makes a slip fail loudly, not escape.
        if not _KEY.match(key) or ".." in key:
            raise ValueError(f"invalid blob key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def submit(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="s3-blobs")
        return asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def _make_client(self) -> Any:
        import boto3  # the `s3` extra; imported only when an s3:// blob_url is configured
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            max_pool_connections=_THREADS,
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=120,
            # Path-style for a named endpoint: most S3-compatible servers have no wildcard DNS for buckets.
            # No SigV4 payload hash (UNSIGNED-PAYLOAD, as botocore does itself over https when a Content-MD5 is
            # sent): every part and object we write carries a Content-MD5 the server checks (SeaweedFS does not
            # check the payload hash at all), and hashing each part again cost a fifth of the server's CPU per
            # upload on a plain-http endpoint.
            s3={"addressing_style": "path" if self.endpoint else "auto", "payload_signing_enabled": False},
            # We send Content-MD5 ourselves; the newer default CRC trailers are not understood by every
            # S3-compatible server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)

    def _ensure_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            if not _missing(exc):
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except Exception as exc:
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    def _open_sync(self) -> None:
        self._client = self._make_client()
        self._ensure_bucket()

    async def open(self) -> None:
        """Connect and create the bucket if it is missing."""
        await self.submit(self._open_sync)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def writer(self, key: str) -> S3BlobWriter:
        return S3BlobWriter(self, key)

    def _get_sync(self, key: str, first: int, last: int | None) -> Any:
        """The object's body from byte `first` to `last` (inclusive; None: the end); None when `first` is past
        the end (S3 answers 416 InvalidRange there)."""
        extra = {} if first == 0 and last is None else {"Range": f"bytes={first}-{'' if last is None else last}"}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        except Exception as exc:
            if _missing(exc):
                raise FileNotFoundError(key) from None
            if _error_code(exc) in {"InvalidRange", "416"}:
                return None
            raise

    async def read(self, key: str, chunk_size: int = 1024 * 1024, *, offset: int = 0,
                   length: int | None = None) -> AsyncIterator[bytes]:
        last = None if length is None else offset + length - 1
        # No byte range names zero bytes, and one past the end has none: either way nothing to read, but a
        # missing blob is still FileNotFoundError.
        body = None if length == 0 else await self.submit(self._get_sync, self.object_key(key), offset, last)
        if body is None:
            if await self.size(key) is None:
                raise FileNotFoundError(key)
            return
        try:
            while True:
                chunk: bytes = await self.submit(body.read, chunk_size)
                if not chunk:
                    break
                observability.BLOB_READ_BYTES.inc(len(chunk))
                yield chunk
        finally:
            body.close()

    def _head_sync(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        return head

    async def size(self, key: str) -> int | None:
        head = await self.submit(self._head_sync, self.object_key(key))
        return None if head is None else int(head["ContentLength"])

    async def age_seconds(self, key: str) -> float | None:
        """Since LastModified. AWS dates a multipart object from the upload's start, not its completion (SeaweedFS
        from completion): an upload that took longer than the sweeper's age looks old the moment it commits."""
        head = await self.submit(self._head_sync, self.object_key(key))
        return None if head is None else time.time() - head["LastModified"].timestamp()

    def _delete_sync(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if not _missing(exc):  # S3 answers 204 for a missing key; a few servers say 404
                raise

    async def delete(self, key: str) -> None:
        await self.submit(self._delete_sync, self.object_key(key))

    def _list_keys_sync(self, prefix: str) -> list[str]:
        base = f"{self.prefix}/{prefix}/" if self.prefix else f"{prefix}/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        # Delimiter "/": only the keys directly under prefix/, as the local store lists one directory. Some
        # servers (SeaweedFS) also list the emptied "directory" itself ("prefix/"): no blob has that key.
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base,
                                                                          Delimiter="/"):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", [])
                        if obj["Key"] != base and "/" not in obj["Key"][len(base):])
        return keys

    async def list_keys(self, prefix: str) -> list[str]:
        return await self.submit(self._list_keys_sync, prefix.strip("/"))

    def _last_activity(self, key: str, upload_id: str, initiated: float) -> float:
        latest = initiated
        for page in self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                     UploadId=upload_id):
            for part in page.get("Parts", []):
                latest = max(latest, part["LastModified"].timestamp())
        return latest

    def _remove_temporaries_sync(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        prefix = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                  Prefix=prefix):
            for upload in page.get("Uploads", []):
                key, upload_id = upload["Key"], upload["UploadId"]
                if upload_id in self.live_uploads or upload["Initiated"].timestamp() > cutoff:
                    continue
                try:
                    # A writer of another process that sent a part recently is alive: its upload stays.
                    if self._last_activity(key, upload_id, upload["Initiated"].timestamp()) > cutoff:
                        continue
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                except Exception as exc:
                    if _missing(exc):
                        continue  # completed or aborted meanwhile
                    raise
                removed += 1
        return removed

    async def remove_temporaries(self, older_than_s: float) -> int:
        """Abort incomplete multipart uploads under the prefix begun over `older_than_s` ago with no part sent
        since, except this process's open writers'. A writer of another process that sends nothing for that
        long loses its upload (its commit then fails): keep `stale_temp_seconds` above any client's pause."""
        return await self.submit(self._remove_temporaries_sync, older_than_s)
