"""What only the S3 blob store has: multipart uploads as temporaries, parts, buckets, URLs (real SeaweedFS)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from inhouse.bootstrap import build_blob_store
from inhouse.storage.s3_blobs import _PARTS_IN_FLIGHT, PART_SIZE, S3BlobStore, parse_s3_url
from tests.storage.seaweedfs import SeaweedFS, seaweedfs


@pytest.fixture(scope="session")
def weed() -> Iterator[SeaweedFS]:
    server = seaweedfs()
    yield server
    server.stop()


def store(weed: SeaweedFS, prefix: str | None = None, bucket: str = "inhouse-test") -> S3BlobStore:
    built = build_blob_store(weed.url(bucket, prefix))
    assert isinstance(built, S3BlobStore)
    return built


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


def uploads(weed: SeaweedFS, s: S3BlobStore) -> list[dict[str, Any]]:
    page: dict[str, Any] = weed.client().list_multipart_uploads(  # type: ignore[attr-defined]
        Bucket=s.bucket, Prefix=s.prefix + "/")
    return list(page.get("Uploads", []))


def test_large_blob_streams_in_parts_and_reads_back(weed: SeaweedFS) -> None:
    data = os.urandom(21 * 1024 * 1024 + 12345)  # three 8 MiB parts, the last one short

    async def body() -> None:
        s = store(weed)
        await s.open()
        w = s.writer("files/big")
        for i in range(0, len(data), 1 << 20):
            await w.write(data[i : i + (1 << 20)])
        assert await s.size("files/big") is None  # invisible until committed
        assert [u["Key"] for u in uploads(weed, s)] == [f"{s.prefix}/files/big"]  # parts went out already
        assert await w.commit() == (len(data), hashlib.sha256(data).hexdigest())
        assert uploads(weed, s) == []
        assert await s.size("files/big") == len(data)
        got = await collect(s.read("files/big", 1 << 20))
        assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        head = weed.client().head_object(Bucket=s.bucket, Key=f"{s.prefix}/files/big")  # type: ignore[attr-defined]
        assert head["ETag"].endswith('-3"')  # a multipart object of three parts
        age = await s.age_seconds("files/big")
        assert age is not None and -5 < age < 60
        await s.close()

    asyncio.run(body())


def test_parts_upload_several_at_once_within_the_bound_and_assemble_in_order(weed: SeaweedFS) -> None:
    part = 5 * 1024 * 1024  # S3's smallest part but the last, to keep this test light
    data = os.urandom(5 * part + 4321)  # five full parts and a short last one
    busy = {"now": 0, "most": 0}
    lock = threading.Lock()

    def slow_part(**_: Any) -> None:  # holds each part request open a while, so parts overlap if they can
        with lock:
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        time.sleep(0.3)
        with lock:
            busy["now"] -= 1

    async def body() -> None:
        s = S3BlobStore.from_url(weed.url())
        s.part_size = part
        await s.open()
        s.client.meta.events.register("before-send.s3.UploadPart", slow_part)
        w = s.writer("files/many")
        for i in range(0, len(data), 64 * 1024):  # network-sized pieces, as a request body arrives
            await w.write(data[i : i + 64 * 1024])
            assert len(w._inflight) <= _PARTS_IN_FLIGHT  # what the writer holds stays bounded
        assert await w.commit() == (len(data), hashlib.sha256(data).hexdigest())
        assert await collect(s.read("files/many")) == data
        head = weed.client().head_object(Bucket=s.bucket, Key=f"{s.prefix}/files/many")  # type: ignore[attr-defined]
        assert head["ETag"].endswith('-6"')
        await s.close()

    asyncio.run(body())
    assert busy["most"] == _PARTS_IN_FLIGHT  # several at once, never more than the bound


def test_aborted_writer_leaves_nothing(weed: SeaweedFS) -> None:
    async def body() -> None:
        s = store(weed)
        await s.open()
        w = s.writer("files/gone")
        await w.write(b"x" * (PART_SIZE + 10))
        await w._wait_inflight()  # a part is out, so there is an upload to abort
        assert len(uploads(weed, s)) == 1
        await w.abort()
        assert uploads(weed, s) == []
        assert await s.list_keys("files") == [] and await s.size("files/gone") is None
        with pytest.raises(RuntimeError, match="already committed or aborted"):
            await w.write(b"more")
        await s.close()

    asyncio.run(body())


def test_bodies_corrupted_in_transit_are_refused_by_their_content_md5(weed: SeaweedFS) -> None:
    # Bodies go without a SigV4 payload hash (UNSIGNED-PAYLOAD): Content-MD5 is their one integrity check, so a
    # part or a small object altered after signing must fail its write, and nothing may appear under the key.
    sent: list[tuple[str, bytes]] = []

    def corrupt(request: Any, event_name: str, **_: Any) -> None:
        sent.append((event_name, request.headers.get("X-Amz-Content-SHA256", b"")))
        body = request.body if isinstance(request.body, bytes) else request.body.read()
        request.body = bytes([body[0] ^ 1]) + body[1:]

    async def body() -> None:
        s = store(weed)
        await s.open()
        s.client.meta.events.register("before-send.s3.UploadPart", corrupt)
        s.client.meta.events.register("before-send.s3.PutObject", corrupt)
        big = s.writer("files/big")
        await big.write(b"p" * (PART_SIZE + 1))
        with pytest.raises(Exception, match="BadDigest"):
            await big.commit()
        small = s.writer("files/small")
        await small.write(b"small")
        with pytest.raises(Exception, match="BadDigest"):
            await small.commit()
        assert await s.size("files/big") is None and await s.size("files/small") is None
        assert uploads(weed, s) == []  # the failed commit aborted its upload
        await s.close()

    asyncio.run(body())
    assert {name.rsplit(".", 1)[-1] for name, _ in sent} == {"UploadPart", "PutObject"}
    assert {payload_hash for _, payload_hash in sent} == {b"UNSIGNED-PAYLOAD"}


def test_abandoned_upload_is_a_temporary_the_sweeper_aborts(weed: SeaweedFS) -> None:
    async def body() -> None:
        prefix = "sweep-" + os.urandom(4).hex()
        owner, sweeper = store(weed, prefix), store(weed, prefix)  # two processes sharing one bucket
        await owner.open()
        await sweeper.open()
        w = owner.writer("files/half")
        await w.write(b"y" * (PART_SIZE + 1))
        await w._wait_inflight()  # the part has reached the server
        assert len(uploads(weed, owner)) == 1
        assert await sweeper.remove_temporaries(3600) == 0  # younger than that: kept
        assert await owner.remove_temporaries(0) == 0  # its own open writer: kept, however old
        assert len(uploads(weed, owner)) == 1
        await asyncio.sleep(1.1)  # the server's timestamps have whole seconds
        assert await sweeper.remove_temporaries(0) == 1  # the owner "died": its upload is swept
        assert uploads(weed, owner) == []
        assert await owner.list_keys("files") == []
        with pytest.raises(Exception, match="NoSuchUpload"):
            await w.commit()  # the owner's late commit fails loudly instead of losing bytes
        assert await owner.size("files/half") is None
        await owner.close()
        await sweeper.close()

    asyncio.run(body())


def test_writer_dropped_without_abort_is_swept_by_its_own_process(weed: SeaweedFS) -> None:
    async def body() -> None:
        s = store(weed)
        await s.open()
        w = s.writer("files/leaked")
        await w.write(b"z" * PART_SIZE)
        await w._wait_inflight()
        assert await s.remove_temporaries(0) == 0
        del w  # a bug or a killed task dropped it: no longer live, so its upload is a temporary
        await asyncio.sleep(1.1)
        assert await s.remove_temporaries(0) == 1 and uploads(weed, s) == []
        await s.close()

    asyncio.run(body())


def test_object_is_invisible_before_commit(weed: SeaweedFS) -> None:
    async def body() -> None:
        s = store(weed)
        await s.open()
        small, big = s.writer("files/small"), s.writer("files/big")
        await small.write(b"abc")
        await big.write(b"b" * (2 * PART_SIZE + 1))
        await big._wait_inflight()
        for key in ("files/small", "files/big"):
            assert await s.size(key) is None and await s.age_seconds(key) is None
            with pytest.raises(FileNotFoundError):
                await collect(s.read(key))
        assert await s.list_keys("files") == []
        await small.commit()
        await big.commit()
        assert sorted(await s.list_keys("files")) == ["files/big", "files/small"]
        await s.close()

    asyncio.run(body())


def test_list_keys_is_one_level_and_paginates(weed: SeaweedFS) -> None:
    async def body() -> None:
        s = store(weed)
        await s.open()
        async def put(key: str) -> None:
            w = s.writer(key)
            await w.write(b"1")
            await w.commit()

        await asyncio.gather(*(put(f"parts/p{i}") for i in range(1003)))  # more than one page (1000 keys)
        await put("parts/nested/deeper")
        keys = await s.list_keys("parts")
        assert len(keys) == 1003 and set(keys) == {f"parts/p{i}" for i in range(1003)}
        assert await s.list_keys("parts/nested") == ["parts/nested/deeper"]
        assert await s.list_keys("par") == []  # a prefix of a directory name is not the directory
        await s.close()

    asyncio.run(body())


def test_open_creates_a_missing_bucket(weed: SeaweedFS) -> None:
    bucket = "inhouse-new-" + os.urandom(4).hex()

    async def body() -> None:
        s = store(weed, bucket=bucket)
        await s.open()
        w = s.writer("files/one")
        await w.write(b"hello")
        assert await w.commit() == (5, hashlib.sha256(b"hello").hexdigest())
        await s.close()
        again = store(weed, s.prefix, bucket=bucket)
        await again.open()  # an existing bucket is fine
        assert await collect(again.read("files/one")) == b"hello"
        await again.close()

    asyncio.run(body())
    names = [b["Name"] for b in weed.client().list_buckets()["Buckets"]]  # type: ignore[attr-defined]
    assert bucket in names


def test_calls_run_off_the_event_loop(weed: SeaweedFS) -> None:
    loop_thread: list[int] = []
    seen: list[int] = []

    async def body() -> None:
        loop_thread.append(threading.get_ident())
        s = store(weed)
        await s.open()
        s.client.meta.events.register("before-send.s3", lambda **_: seen.append(threading.get_ident()))
        w = s.writer("files/t")
        await w.write(b"q" * (PART_SIZE + 1))
        await w.commit()
        await collect(s.read("files/t"))
        await s.size("files/t")
        await s.list_keys("files")
        await s.delete("files/t")
        await s.remove_temporaries(0)
        await s.close()

    asyncio.run(body())
    assert len(seen) >= 8 and loop_thread[0] not in seen


def test_wrong_credentials_are_refused(weed: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    async def body() -> None:
        s = store(weed)
        with pytest.raises(Exception, match=r"403|SignatureDoesNotMatch|AccessDenied"):
            await s.open()  # the bucket check is a signed request already
        await s.close()

    asyncio.run(body())


def test_url_parsing() -> None:
    p = parse_s3_url("s3://bkt/a/b/?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert p == {"bucket": "bkt", "prefix": "a/b", "endpoint": "http://127.0.0.1:9000", "region": "eu-west-1"}
    assert parse_s3_url("s3://bkt") == {"bucket": "bkt", "prefix": "", "endpoint": None, "region": None}
    with pytest.raises(ValueError, match="must not carry credentials"):
        build_blob_store("s3://key:secret@bkt/p")
    with pytest.raises(ValueError, match="unsupported blob_url parameter"):
        build_blob_store("s3://bkt/p?secret_key=x")
    with pytest.raises(ValueError, match="invalid blob_url prefix"):
        build_blob_store("s3://bkt/a/../b")
    with pytest.raises(ValueError, match="unsupported blob_url scheme"):
        build_blob_store("gs://bkt/p")
    s = S3BlobStore("bkt", "pre")
    assert s.object_key("files/file-1") == "pre/files/file-1"
    with pytest.raises(ValueError, match="invalid blob key"):
        s.writer("files/../x")
