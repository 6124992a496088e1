"""The storage contract, written once and run against every backend the build has."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from inhouse.bootstrap import build_blob_store, build_metadata_store
from inhouse.records import FileRecord, IdempotencyRecord, ModelRecord, UploadPartRecord, UploadRecord
from inhouse.storage.base import BlobStore, MetadataStore
from inhouse.storage.errors import Conflict
from tests.storage import postgres_server
from tests.storage.seaweedfs import seaweedfs

# Each backend: a name and a factory from a temp dir to a URL. Postgres and S3 join this list.
META_BACKENDS = {"sqlite": lambda d: f"sqlite:///{d / 'meta.db'}", "postgres": postgres_server.database_url}
BLOB_BACKENDS = {"local": lambda d: f"file://{d / 'blobs'}", "s3": lambda d: seaweedfs().url()}


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(params=sorted(META_BACKENDS))
def meta_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], MetadataStore]:
    return lambda: build_metadata_store(META_BACKENDS[request.param](tmp_path))


@pytest.fixture(params=sorted(BLOB_BACKENDS))
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return build_blob_store(BLOB_BACKENDS[request.param](tmp_path))


def file_rec(fid: str, project: str, created: int = 100, expires: int | None = None, purpose: str = "assistants"
             ) -> FileRecord:
    return FileRecord(fid, project, 3, created, expires, f"{fid}.txt", purpose, "processed", None, "ab")


async def with_meta(factory: Callable[[], MetadataStore], body: Callable[[MetadataStore], Awaitable[Any]]) -> Any:
    meta = factory()
    await meta.open()
    await meta.migrate()
    try:
        return await body(meta)
    finally:
        await meta.close()


def test_migrations_are_idempotent_and_durability_checked(meta_factory: Callable[[], MetadataStore]) -> None:
    """Every step is applied once, however often a store is opened; `check` refuses a database whose durability
    settings could lose an acknowledged write (what each backend reports: test_sqlite.py, test_postgres.py)."""

    async def body(meta: MetadataStore) -> None:
        assert await meta.migrate() == 0
        assert await meta.check()  # raises RuntimeError when a durability setting is not in force

    run(with_meta(meta_factory, body))
    run(with_meta(meta_factory, body))  # reopen: nothing applied twice


def test_a_failed_write_leaves_nothing(meta_factory: Callable[[], MetadataStore]) -> None:
    """A write is one transaction: when its second row breaks a constraint, its first is not kept either."""

    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        await meta.files.insert_file(file_rec("file-taken", p))
        up = UploadRecord("upload_1", p, "f", "assistants", 3, "text/plain", "pending", 1, 3601, None, None)
        await meta.uploads.insert_upload(up)
        with pytest.raises(Conflict):
            await meta.uploads.complete_upload("upload_1", file_rec("file-taken", p))  # that file id exists
        got = await meta.uploads.get_upload(p, "upload_1")
        assert got is not None and (got.status, got.file_id) == ("pending", None)
        assert await meta.uploads.complete_upload("upload_1", file_rec("file-new", p))  # and it still can complete

    run(with_meta(meta_factory, body))


def test_files_scoping_pagination_expiry(meta_factory: Callable[[], MetadataStore]) -> None:
    async def body(meta: MetadataStore) -> None:
        a = (await meta.keys.get_or_create_project("a")).id
        b = (await meta.keys.get_or_create_project("b")).id
        assert (await meta.keys.get_or_create_project("a")).id == a
        for i in range(5):
            await meta.files.insert_file(file_rec(f"file-{i}", a, purpose="batch" if i == 4 else "assistants"))
        await meta.files.insert_file(file_rec("file-b", b))
        await meta.files.insert_file(file_rec("file-old", a, expires=150))
        page = await meta.files.list_files(a, purpose=None, after=None, limit=2, order="desc", now=120)
        assert [f.id for f in page.items] == ["file-old", "file-4"] and page.has_more
        page = await meta.files.list_files(a, purpose=None, after="file-4", limit=10, order="desc", now=200)
        assert [f.id for f in page.items] == ["file-3", "file-2", "file-1", "file-0"] and not page.has_more
        page = await meta.files.list_files(a, purpose="batch", after=None, limit=10, order="asc", now=200)
        assert [f.id for f in page.items] == ["file-4"]
        assert (await meta.files.list_files(a, purpose=None, after="file-b", limit=10, order="desc", now=1)).items == []
        assert await meta.files.get_file(b, "file-1", 1) is None
        assert await meta.files.get_file(a, "file-old", 149) is not None
        assert await meta.files.get_file(a, "file-old", 150) is None
        assert [f.id for f in await meta.files.expired_files(150, 10)] == ["file-old"]
        assert not await meta.files.delete_file(b, "file-1")
        assert await meta.files.delete_file(a, "file-1")
        assert await meta.files.existing_file_ids(["file-0", "file-1", "file-b"]) == {"file-0", "file-b"}

    run(with_meta(meta_factory, body))


def test_uploads_complete_is_atomic(meta_factory: Callable[[], MetadataStore]) -> None:
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        q = (await meta.keys.get_or_create_project("q")).id
        up = UploadRecord("upload_1", p, "f", "assistants", 6, "text/plain", "pending", 1, 3601, None, None)
        await meta.uploads.insert_upload(up)
        assert await meta.uploads.get_upload(q, "upload_1") is None
        assert not await meta.uploads.insert_upload_part(q, UploadPartRecord("part_x", "upload_1", 1, 3, "h"))
        assert await meta.uploads.insert_upload_part(p, UploadPartRecord("part_1", "upload_1", 1, 3, "h"))
        assert await meta.uploads.insert_upload_part(p, UploadPartRecord("part_2", "upload_1", 2, 3, "h"))
        assert [x.id for x in await meta.uploads.get_upload_parts("upload_1")] == ["part_1", "part_2"]
        assert await meta.uploads.complete_upload("upload_1", file_rec("file-u", p))
        assert not await meta.uploads.complete_upload("upload_1", file_rec("file-v", p))  # once only
        assert await meta.files.get_file(p, "file-v", 1) is None
        got = await meta.uploads.get_upload(p, "upload_1")
        assert got is not None and got.status == "completed" and got.file_id == "file-u"
        assert not await meta.uploads.insert_upload_part(p, UploadPartRecord("part_3", "upload_1", 3, 3, "h"))
        assert not await meta.uploads.set_upload_status("upload_1", expect="pending", status="cancelled")
        await meta.uploads.delete_upload_parts("upload_1")
        assert await meta.uploads.existing_part_ids(["part_1"]) == set()

    run(with_meta(meta_factory, body))


def test_models_and_idempotency(meta_factory: Callable[[], MetadataStore]) -> None:
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        q = (await meta.keys.get_or_create_project("q")).id
        await meta.models.insert_model(ModelRecord("ft:x:p::1", p, 5, "user", "chat", "x", "models/1"))
        assert [m.id for m in await meta.models.list_models(p)] == ["ft:x:p::1"]
        assert await meta.models.list_models(q) == []
        assert not await meta.models.delete_model(q, "ft:x:p::1")
        assert await meta.models.delete_model(p, "ft:x:p::1")
        rec = IdempotencyRecord("s", "k", "", 10, None, None, None)
        assert await meta.idempotency.begin_idempotent(rec, "A", 20) is None
        pending = await meta.idempotency.begin_idempotent(rec, "B", 20)
        assert pending is not None and pending.status_code is None
        await meta.idempotency.finish_idempotent("s", "k", "h", 200, "application/json", b"{}")
        done = await meta.idempotency.begin_idempotent(rec, "B", 20)
        assert done is not None and (done.request_hash, done.status_code, done.body) == ("h", 200, b"{}")
        assert await meta.idempotency.purge_idempotent(11) == 1
        assert await meta.idempotency.begin_idempotent(rec, "A", 20) is None
        await meta.idempotency.abort_idempotent("s", "k")
        assert await meta.idempotency.begin_idempotent(rec, "A", 20) is None

    run(with_meta(meta_factory, body))


def test_idempotency_claims_are_leases(meta_factory: Callable[[], MetadataStore]) -> None:
    """An in-flight claim lives while its owner renews it; once its lease runs out, a retry takes it over."""

    async def body(meta: MetadataStore) -> None:
        at = lambda t: IdempotencyRecord("s", "k", "", t, None, None, None)  # noqa: E731
        assert await meta.idempotency.begin_idempotent(at(100), "A", 110) is None
        assert (await meta.idempotency.begin_idempotent(at(105), "B", 115)) is not None  # A's lease holds
        assert await meta.idempotency.renew_idempotent("A", 120) == 1
        assert (await meta.idempotency.begin_idempotent(at(115), "B", 125)) is not None  # renewed past 115
        assert await meta.idempotency.begin_idempotent(at(121), "B", 131) is None  # A died: B takes over
        assert await meta.idempotency.renew_idempotent("A", 140) == 0  # A's renewals no longer reach it
        assert (await meta.idempotency.begin_idempotent(at(125), "C", 135)) is not None
        await meta.idempotency.finish_idempotent("s", "k", "h", 201, "application/json", b"{}")
        done = await meta.idempotency.begin_idempotent(at(500), "C", 510)  # a finished answer never expires by lease
        assert done is not None and done.status_code == 201

    run(with_meta(meta_factory, body))


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


def test_blob_write_commit_read_delete(blobs: BlobStore) -> None:
    async def body() -> None:
        await blobs.open()
        data = b"x" * (3 * 1024 * 1024 + 7)
        w = blobs.writer("files/file-1")
        for i in range(0, len(data), 65536):
            await w.write(data[i : i + 65536])
        assert await blobs.size("files/file-1") is None  # invisible until committed
        size, sha = await w.commit()
        assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
        assert await collect(blobs.read("files/file-1", 1000)) == data
        assert await blobs.list_keys("files") == ["files/file-1"]
        aborted = blobs.writer("files/file-2")
        await aborted.write(b"abc")
        await aborted.abort()
        assert await blobs.list_keys("files") == ["files/file-1"]
        assert await blobs.remove_temporaries(0) == 0
        await blobs.delete("files/file-1")
        await blobs.delete("files/file-1")  # deleting twice is fine
        assert await blobs.list_keys("files") == []
        empty = blobs.writer("files/empty")
        assert await empty.commit() == (0, hashlib.sha256(b"").hexdigest())
        await blobs.close()

    run(body())


def test_blob_ranged_reads(blobs: BlobStore) -> None:
    """A byte range of a blob, streamed in chunks no bigger than asked, at any offset and length."""

    async def body() -> None:
        await blobs.open()
        data = bytes(range(256)) * 40_000 + b"tail"  # ~10 MiB: an S3 object of two parts
        w = blobs.writer("files/ranged")
        for i in range(0, len(data), 1 << 20):
            await w.write(data[i : i + (1 << 20)])
        await w.commit()
        for offset, length in ((0, None), (0, 1), (1, 10), (5_000_000, 3_000_001), (len(data) - 4, None),
                               (len(data) - 4, 100), (123, 0), (len(data), None), (len(data) + 10, 5)):
            chunks = [c async for c in blobs.read("files/ranged", 65536, offset=offset, length=length)]
            end = len(data) if length is None else offset + length
            assert b"".join(chunks) == data[offset:end], (offset, length)
            assert all(0 < len(c) <= 65536 for c in chunks)
        for offset, length in ((0, None), (7, 3), (10, 0)):
            with pytest.raises(FileNotFoundError):
                await collect(blobs.read("files/none", offset=offset, length=length))
        await blobs.delete("files/ranged")
        await blobs.close()

    run(body())


@pytest.mark.parametrize("key", ["../x", "files/../../etc", "/abs", "files/a b", "files/"])
def test_blob_keys_cannot_escape(blobs: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        blobs.writer(key)
