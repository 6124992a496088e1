"""The storage contract of workers' leases (fine-tuning jobs and batches), run against every metadata backend:
claims, heartbeats, expiry and takeover, lease-guarded writes, and concurrent claimers never sharing a row."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from inhouse.records import (
    BatchChunk,
    BatchRecord,
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    ModelRecord,
)
from inhouse.storage.base import MetadataStore
from tests.storage.test_contract import file_rec, meta_factory, run, with_meta  # noqa: F401 - a fixture
from tests.storage.test_usage_contract import job


def event(eid: str, job_id: str, kind: str = "message", data: dict[str, object] | None = None
          ) -> FineTuningEventRecord:
    return FineTuningEventRecord(eid, job_id, 1, "info", eid, kind, data)


def ckpt(cid: str, job_id: str, step: int) -> FineTuningCheckpointRecord:
    return FineTuningCheckpointRecord(cid, job_id, step, step, 1, {"train_loss": 0.5}, f"ft:m:{cid}", f"ck/{cid}")


def batch(bid: str, project: str, status: str = "validating") -> BatchRecord:
    return BatchRecord(bid, project, "/v1/embeddings", "file-in", "24h", status, 1, 86_401,
                       metadata={"k": "v"}, output_expires_after={"anchor": "created_at", "seconds": 3600})


async def two_stores(factory: Callable[[], MetadataStore], meta: MetadataStore) -> MetadataStore:
    """A second store on the same database: another process, as far as the database can tell."""
    other = factory()
    await other.open()
    assert await other.migrate() == 0
    return other


def test_job_claim_heartbeat_expiry_and_guarded_writes(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        q = (await meta.keys.get_or_create_project("q")).id
        big_seed = 2**63 - 1  # seeds are int64
        await meta.jobs.insert_job(replace(job("ftjob-1", p), seed=big_seed, metadata={"a.b": "x'y", "env": "prod"}),
                                   [event("ev-0", "ftjob-1")])
        await meta.jobs.insert_job(job("ftjob-2", p), [])
        await meta.jobs.insert_job(replace(job("ftjob-3", p), status="succeeded"), [])

        got = await meta.jobs.claim_job("A", 100, 10)
        assert got is not None and (got.id, got.lease_owner, got.lease_expires_at, got.attempts) == (
            "ftjob-1", "A", 110, 1)
        assert got.seed == big_seed and got.metadata == {"a.b": "x'y", "env": "prod"}
        second = await meta.jobs.claim_job("B", 100, 1000)  # held throughout
        assert second is not None and second.id == "ftjob-2"
        assert await meta.jobs.claim_job("C", 100, 10) is None  # the rest are leased or terminal

        # Metadata filters match keys and values literally, quotes and dots included.
        assert [j.id for j in (await meta.jobs.list_jobs(p, after=None, limit=10, metadata={"a.b": "x'y"})).items] == [
            "ftjob-1"]
        assert (await meta.jobs.list_jobs(p, after=None, limit=10, metadata={"a": "x'y"})).items == []
        assert [j.id for j in (await meta.jobs.list_jobs(p, after=None, limit=10, metadata=None,
                                                     no_metadata=True)).items] == ["ftjob-3", "ftjob-2"]

        # Heartbeats: only the holder renews, and it may carry fields along.
        assert await meta.jobs.heartbeat_job("ftjob-1", "B", 105, 10) is None
        assert await meta.jobs.heartbeat_job("ftjob-1", "A", 105, 10, {"estimated_finish": 500}) == "queued"
        held = await meta.jobs.get_job_any("ftjob-1")
        assert held is not None and (held.lease_expires_at, held.estimated_finish) == (115, 500)

        # Lease-guarded writes: another worker writes nothing.
        assert not await meta.jobs.worker_update("ftjob-1", "B", fields={"status": "running"},
                                                 events=[event("ev-b", "ftjob-1")])
        assert await meta.jobs.worker_update("ftjob-1", "A", fields={"status": "running", "hyperparameters": {"n": 3}},
                                             events=[event("ev-1", "ftjob-1", "metrics", {"step": 7}),
                                                event("ev-2", "ftjob-1", "metrics", {"step": 12})])
        held = await meta.jobs.get_job_any("ftjob-1")
        assert held is not None and held.status == "running" and held.hyperparameters == {"n": 3}
        assert [e.id for e in (await meta.jobs.list_events("ftjob-1", after=None, limit=10)).items] == [
            "ev-2", "ev-1", "ev-0"]
        assert await meta.jobs.last_metric_step("ftjob-1") == 12

        # Checkpoints: the oldest beyond `keep` go, and their artifact keys come back to be deleted.
        assert await meta.jobs.add_checkpoint("A", ckpt("ck-1", "ftjob-1", 1), event("ev-c1", "ftjob-1"), 2) == []
        assert await meta.jobs.add_checkpoint("A", ckpt("ck-2", "ftjob-1", 2), event("ev-c2", "ftjob-1"), 2) == []
        assert await meta.jobs.add_checkpoint("A", ckpt("ck-3", "ftjob-1", 3), event("ev-c3", "ftjob-1"), 2) == [
            "ck/ck-1"]
        page = await meta.jobs.list_checkpoints("ftjob-1", after=None, limit=1)
        assert [c.id for c in page.items] == ["ck-3"] and page.has_more
        assert [c.id for c in (await meta.jobs.list_checkpoints("ftjob-1", after="ck-3", limit=5)).items] == ["ck-2"]
        found = await meta.jobs.checkpoint_by_name(p, "ft:m:ck-2")
        assert found is not None and found.metrics == {"train_loss": 0.5}
        assert await meta.jobs.checkpoint_by_name(q, "ft:m:ck-2") is None
        assert {"ck/ck-2", "ck/ck-3"} <= await meta.jobs.referenced_artifacts()

        # The lease runs out (expiry is strict: at 115 it still holds) and C takes the job over.
        assert await meta.jobs.claim_job("C", 115, 10) is None
        taken = await meta.jobs.claim_job("C", 116, 10)
        assert taken is not None and (taken.id, taken.lease_owner, taken.attempts) == ("ftjob-1", "C", 2)
        # A, still running somewhere, can write nothing more.
        assert await meta.jobs.heartbeat_job("ftjob-1", "A", 117, 10) is None
        assert not await meta.jobs.worker_update("ftjob-1", "A", fields={"status": "failed"})
        assert await meta.jobs.add_checkpoint("A", ckpt("ck-4", "ftjob-1", 4), event("ev-c4", "ftjob-1"), 2) is None
        model = ModelRecord("ft:m:p::1", p, 120, "user", "chat", "base", "models/1")
        assert not await meta.jobs.finish_job_success("ftjob-1", "A", fields={"status": "succeeded"}, model=model,
                                                      events=[])
        assert await meta.models.get_model(p, "ft:m:p::1") is None
        assert [c.id for c in (await meta.jobs.list_checkpoints("ftjob-1", after=None, limit=9)).items] == [
            "ck-3", "ck-2"]

        # A user's cancel ends the job: the holder's heartbeat tells it so, and its writes stop.
        after, changed = await meta.jobs.transition_job(p, "ftjob-1", allowed=("queued", "running"),
                                                        fields={"status": "cancelled"}, event=event("ev-x", "ftjob-1"))
        assert changed and after is not None and after.status == "cancelled"
        again, changed = await meta.jobs.transition_job(p, "ftjob-1", allowed=("queued", "running"),
                                                        fields={"status": "cancelled"}, event=None)
        assert not changed and again is not None and again.status == "cancelled"
        assert await meta.jobs.transition_job(q, "ftjob-1", allowed=("cancelled",), fields={}, event=None) == (
            None, False)
        assert await meta.jobs.heartbeat_job("ftjob-1", "C", 118, 10) == "cancelled"
        assert not await meta.jobs.worker_update("ftjob-1", "C", fields={"status": "running"})

        # A released job is claimable at once; success publishes the model and clears the lease.
        await meta.jobs.release_job("ftjob-2", "A")  # not A's: nothing happens
        assert await meta.jobs.claim_job("D", 101, 10) is None
        await meta.jobs.release_job("ftjob-2", "B")
        resumed = await meta.jobs.claim_job("D", 101, 10)
        assert resumed is not None and (resumed.id, resumed.attempts) == ("ftjob-2", 2)
        model2 = ModelRecord("ft:m:p::2", p, 130, "user", "chat", "base", "models/2")
        assert await meta.jobs.finish_job_success("ftjob-2", "D", fields={"status": "succeeded", "finished_at": 130,
                                                                          "trained_tokens": 2**40}, model=model2,
                                             events=[event("ev-done", "ftjob-2")])
        done = await meta.jobs.get_job(p, "ftjob-2")
        assert done is not None and (done.status, done.lease_owner, done.trained_tokens) == ("succeeded", None, 2**40)
        assert [m.id for m in await meta.models.list_models(p)] == ["ft:m:p::2"]
        assert await meta.jobs.claim_job("E", 1000, 10) is None

    run(with_meta(meta_factory, body))


def test_concurrent_job_claimers_never_share_a_job(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        ids = [f"ftjob-{i:02d}" for i in range(24)]
        for jid in ids:
            await meta.jobs.insert_job(job(jid, p), [])
        other = await two_stores(meta_factory, meta)
        claimed: list[tuple[str, str]] = []

        async def claimer(store: MetadataStore, owner: str) -> None:
            while (got := await store.jobs.claim_job(owner, 100, 60)) is not None:
                assert got.lease_owner == owner
                claimed.append((got.id, owner))

        try:
            await asyncio.gather(*(claimer((meta, other)[i % 2], f"w{i}") for i in range(8)))
        finally:
            await other.close()
        assert sorted(jid for jid, _ in claimed) == ids  # each job exactly once
        for jid, owner in claimed:
            row = await meta.jobs.get_job_any(jid)
            assert row is not None and (row.lease_owner, row.attempts) == (owner, 1)

    run(with_meta(meta_factory, body))


def test_batch_claim_heartbeat_chunks_and_finish(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        q = (await meta.keys.get_or_create_project("q")).id
        await meta.batches.insert_batch(batch("batch_1", p))
        await meta.batches.insert_batch(batch("batch_2", p, status="completed"))
        await meta.batches.insert_batch(batch("batch_3", p, status="in_progress"))
        assert await meta.batches.open_batch_ids() == {"batch_1", "batch_3"}

        got = await meta.batches.claim_batch("A", 100, 10)
        assert got is not None and (got.id, got.lease_owner, got.lease_expires_at, got.attempts) == (
            "batch_1", "A", 110, 1)
        assert got.output_expires_after == {"anchor": "created_at", "seconds": 3600}
        second = await meta.batches.claim_batch("B", 100, 1000)  # held throughout
        assert second is not None and second.id == "batch_3"
        assert await meta.batches.claim_batch("C", 100, 10) is None

        assert await meta.batches.heartbeat_batch("batch_1", "B", 105, 10) is None
        assert await meta.batches.heartbeat_batch("batch_1", "A", 105, 10) == "validating"
        held = await meta.batches.get_batch_any("batch_1")
        assert held is not None and held.lease_expires_at == 115

        # Guarded updates: the holder only, and only from an allowed status.
        assert not await meta.batches.batch_update("batch_1", "B", {"status": "in_progress"})
        assert await meta.batches.batch_update("batch_1", "A", {
            "status": "in_progress", "in_progress_at": 105, "request_total": 6, "errors": [{"code": "x", "line": 2}]})
        assert not await meta.batches.batch_update("batch_1", "A", {"status": "finalizing"}, allowed=("validating",))
        held = await meta.batches.get_batch(p, "batch_1")
        assert held is not None and (held.status, held.request_total, held.errors) == (
            "in_progress", 6, [{"code": "x", "line": 2}])
        assert await meta.batches.get_batch(q, "batch_1") is None

        # A chunk counts once, however often it is recorded.
        assert await meta.batches.add_batch_chunk("batch_1", "A", BatchChunk(0, 2, 1, 10, 20))
        assert await meta.batches.add_batch_chunk("batch_1", "A", BatchChunk(0, 2, 1, 10, 20))
        assert await meta.batches.add_batch_chunk("batch_1", "A", BatchChunk(1, 3, 0, 5, 2**33))
        assert not await meta.batches.add_batch_chunk("batch_1", "B", BatchChunk(2, 1, 0, 1, 1))
        assert [c.index for c in await meta.batches.batch_chunks("batch_1")] == [0, 1]
        held = await meta.batches.get_batch_any("batch_1")
        assert held is not None and (held.request_completed, held.request_failed, held.input_tokens,
                                     held.output_tokens) == (5, 1, 15, 20 + 2**33)

        # A's lease runs out; C takes over, and A's late writes change nothing.
        assert await meta.batches.claim_batch("C", 115, 10) is None
        taken = await meta.batches.claim_batch("C", 116, 10)
        assert taken is not None and (taken.id, taken.lease_owner, taken.attempts) == ("batch_1", "C", 2)
        assert await meta.batches.heartbeat_batch("batch_1", "A", 117, 10) is None
        assert not await meta.batches.add_batch_chunk("batch_1", "A", BatchChunk(2, 1, 0, 1, 1))
        assert not await meta.batches.finish_batch("batch_1", "A", fields={"status": "completed"},
                                                   files=[file_rec("file-late", p)])
        assert await meta.files.get_file(p, "file-late", 1) is None

        # finish: the output file's row, the fields and the cleared lease in one transaction.
        assert await meta.batches.finish_batch("batch_1", "C", fields={"status": "completed", "completed_at": 120,
                                                                       "output_file_id": "file-out"},
                                       files=[file_rec("file-out", p, purpose="batch_output")])
        assert await meta.files.get_file(p, "file-out", 1) is not None
        done = await meta.batches.get_batch(p, "batch_1")
        assert done is not None and (done.status, done.lease_owner, done.output_file_id) == (
            "completed", None, "file-out")
        assert not await meta.batches.batch_update("batch_1", "C", {"status": "failed"})
        assert await meta.batches.open_batch_ids() == {"batch_3"}

        # A user's cancel moves the batch to cancelling: still open, so its holder renews and finishes it.
        moved, changed = await meta.batches.transition_batch(p, "batch_3", allowed=("validating", "in_progress"),
                                                             fields={"status": "cancelling", "cancelling_at": 121})
        assert changed and moved is not None and moved.status == "cancelling"
        assert await meta.batches.transition_batch(p, "batch_3", allowed=("in_progress",), fields={"status": "x"}) == (
            moved, False)
        assert await meta.batches.transition_batch(q, "batch_3", allowed=("cancelling",), fields={}) == (None, False)
        assert await meta.batches.heartbeat_batch("batch_3", "B", 122, 10) == "cancelling"
        await meta.batches.release_batch("batch_3", "A")  # not A's: nothing happens
        assert await meta.batches.claim_batch("D", 123, 10) is None
        await meta.batches.release_batch("batch_3", "B")
        resumed = await meta.batches.claim_batch("D", 123, 10)
        assert resumed is not None and (resumed.id, resumed.attempts) == ("batch_3", 2)
        page = await meta.batches.list_batches(p, after=None, limit=2)
        assert [b.id for b in page.items] == ["batch_3", "batch_2"] and page.has_more
        assert [b.id for b in (await meta.batches.list_batches(p, after="batch_2", limit=2)).items] == ["batch_1"]

    run(with_meta(meta_factory, body))


def test_concurrent_batch_claimers_and_chunks(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        ids = [f"batch_{i:02d}" for i in range(16)]
        for bid in ids:
            await meta.batches.insert_batch(batch(bid, p))
        other = await two_stores(meta_factory, meta)
        claimed: list[tuple[str, str]] = []

        async def claimer(store: MetadataStore, owner: str) -> None:
            while (got := await store.batches.claim_batch(owner, 100, 60)) is not None:
                claimed.append((got.id, owner))

        try:
            await asyncio.gather(*(claimer((meta, other)[i % 2], f"w{i}") for i in range(8)))
            assert sorted(bid for bid, _ in claimed) == ids  # each batch exactly once
            # The same chunk recorded at once through both stores (a retried write racing the first) counts once.
            bid, owner = claimed[0]
            chunk = BatchChunk(0, 4, 1, 7, 9)
            results = await asyncio.gather(*(s.batches.add_batch_chunk(bid, owner, chunk) for s in (meta, other) * 3))
        finally:
            await other.close()
        assert all(results)
        row = await meta.batches.get_batch_any(bid)
        assert row is not None and (row.request_completed, row.request_failed, row.input_tokens,
                                    row.output_tokens) == (4, 1, 7, 9)

    run(with_meta(meta_factory, body))


def test_a_lapsed_lease_is_kept_until_another_claims(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    """Expiry makes a job or batch claimable, it does not take it away: a late heartbeat of the holder renews it,
    as long as no other worker claimed it meanwhile."""

    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        await meta.jobs.insert_job(job("ftjob-1", p), [])
        await meta.batches.insert_batch(batch("batch_1", p))
        assert (await meta.jobs.claim_job("A", 100, 10)) is not None
        assert (await meta.batches.claim_batch("A", 100, 10)) is not None
        assert await meta.jobs.heartbeat_job("ftjob-1", "A", 130, 10) == "queued"  # 20 s late
        assert await meta.batches.heartbeat_batch("batch_1", "A", 130, 10) == "validating"
        assert await meta.jobs.claim_job("B", 135, 10) is None  # renewed to 140
        assert await meta.batches.claim_batch("B", 135, 10) is None
        assert await meta.jobs.worker_update("ftjob-1", "A", fields={"status": "running"})
        assert await meta.batches.batch_update("batch_1", "A", {"status": "in_progress"})

    run(with_meta(meta_factory, body))
