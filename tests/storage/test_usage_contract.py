"""The storage contract of usage, key limits and the admin listings, run against every metadata backend."""

from __future__ import annotations

from collections.abc import Callable

from inhouse.records import ApiKey, FineTuningJobRecord, ModelRecord, RateUsage, UsageRecord
from inhouse.storage.base import MetadataStore
from tests.storage.test_contract import meta_factory, run, with_meta  # noqa: F401 - meta_factory is a fixture

EMB, CHAT = "/v1/embeddings", "/v1/chat/completions"
EVERY = frozenset({"project_id", "api_key_id", "model", "endpoint"})


def key(kid: str, project: str, created: int, **kw: object) -> ApiKey:
    return ApiKey(kid, project, "hash-" + kid, kid, created, None, **kw)  # type: ignore[arg-type]


def job(jid: str, project: str, model: str = "gpt-4o-mini") -> FineTuningJobRecord:
    return FineTuningJobRecord(
        id=jid, project_id=project, created_at=1, model=model, base_model="base", parent_model=None,
        training_file="file-1", validation_file=None, suffix=None, seed=1, method={"type": "supervised"},
        hyperparameters={}, status="queued", error=None, fine_tuned_model=None, finished_at=None,
        trained_tokens=None, integrations=None, metadata=None, result_files=[], estimated_finish=None, attempts=0,
        lease_owner=None, lease_expires_at=None)


def test_usage_rows_add_up_and_bucket(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        a = (await meta.keys.get_or_create_project("a")).id
        b = (await meta.keys.get_or_create_project("b")).id
        await meta.keys.insert_api_key(key("key_1", a, 1))
        await meta.usage.add_usage([UsageRecord(60, a, "key_1", "m1", EMB, 1, 5),
                                    UsageRecord(120, a, None, "m1", EMB, 2, 7),
                                    UsageRecord(60, b, None, "m2", CHAT, 1, 3, 4)], {"key_1": 100})
        # The same row again adds to it (the writer sends increments); last use never goes back.
        await meta.usage.add_usage([UsageRecord(60, a, "key_1", "m1", EMB, 1, 6)], {"key_1": 90})
        got = await meta.keys.get_api_key("key_1")
        assert got is not None and got.last_used_at == 100

        rows = await meta.usage.usage_totals(endpoints=(EMB, CHAT), start=0, end=3600, width=3600, group_by=EVERY)
        assert [(t.start, t.project_id, t.api_key_id, t.model, t.endpoint, t.requests, t.input_tokens,
                 t.output_tokens) for t in rows] == sorted([
            (0, a, "key_1", "m1", EMB, 2, 11, 0), (0, a, None, "m1", EMB, 2, 7, 0),
            (0, b, None, "m2", CHAT, 1, 3, 4)], key=lambda r: (r[0], r[1], r[2] or "", r[3], r[4]))

        # Buckets start at `start`; a minute counts in the bucket its start falls in, within [start, end).
        per_minute = await meta.usage.usage_totals(endpoints=(EMB,), start=30, end=150, width=60, group_by=frozenset())
        assert [(t.start, t.requests, t.project_id) for t in per_minute] == [(30, 2, None), (90, 2, None)]
        assert await meta.usage.usage_totals(endpoints=(EMB,), start=61, end=120, width=60, group_by=frozenset()) == []

        # Filters: None matches everything, an empty one nothing; an open-mode key is asked for as None.
        only_b = await meta.usage.usage_totals(endpoints=(EMB, CHAT), start=0, end=3600, width=3600,
                                               group_by=frozenset({"model"}), project_ids=(b,))
        assert [(t.model, t.requests) for t in only_b] == [("m2", 1)]
        keyless = await meta.usage.usage_totals(endpoints=(EMB,), start=0, end=3600, width=3600,
                                                group_by=frozenset({"api_key_id"}), api_key_ids=(None,))  # type: ignore[arg-type]
        assert [(t.api_key_id, t.input_tokens) for t in keyless] == [(None, 7)]
        assert await meta.usage.usage_totals(endpoints=(), start=0, end=3600, width=3600, group_by=frozenset()) == []
        assert await meta.usage.usage_totals(endpoints=(EMB,), start=0, end=3600, width=3600, group_by=frozenset(),
                                             models=()) == []

    run(with_meta(meta_factory, body))


def test_training_counts_once_for_the_key_that_made_it(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        p = (await meta.keys.get_or_create_project("p")).id
        await meta.jobs.insert_job(job("ftjob-1", p), [])
        await meta.jobs.insert_job(job("ftjob-2", p, "davinci-002"), [])
        await meta.jobs.set_job_api_key("ftjob-1", "key_1")
        assert await meta.usage.settle_training_usage() == 0  # nothing succeeded yet
        for jid, tokens in (("ftjob-1", 1000), ("ftjob-2", 50)):
            claimed = await meta.jobs.claim_job("w", 100, 30)
            assert claimed is not None and claimed.id == jid
            assert await meta.jobs.finish_job_success(jid, "w", fields={
                "status": "succeeded", "finished_at": 130, "trained_tokens": tokens,
            }, model=ModelRecord(f"ft:{jid}", p, 130, "user", "chat", "base", "a/1"), events=[])
        assert await meta.usage.settle_training_usage() == 2
        assert await meta.usage.settle_training_usage() == 0  # each job once, however often it runs
        rows = await meta.usage.usage_totals(endpoints=("/v1/fine_tuning/jobs",), start=0, end=3600, width=3600,
                                             group_by=frozenset({"api_key_id", "model"}))
        assert [(t.api_key_id, t.model, t.trained_tokens, t.requests) for t in rows] == [
            (None, "davinci-002", 50, 1), ("key_1", "gpt-4o-mini", 1000, 1)]
        # In the minute it finished.
        assert [t.start for t in await meta.usage.usage_totals(endpoints=("/v1/fine_tuning/jobs",), start=0, end=3600,
                                                               width=60, group_by=frozenset())] == [120]

    run(with_meta(meta_factory, body))


def test_keys_limits_and_listings(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        a = (await meta.keys.get_or_create_project("a")).id
        b = (await meta.keys.get_or_create_project("b")).id
        c = (await meta.keys.get_or_create_project("c")).id
        await meta.keys.insert_api_key(key("key_1", a, 1, rpm=3, admin=True))
        await meta.keys.insert_api_key(key("key_2", a, 2, tpm=100))
        await meta.keys.insert_api_key(key("key_3", a, 3))
        await meta.keys.insert_api_key(key("key_4", b, 1))
        got = await meta.keys.get_api_key("key_1")
        assert got is not None and (got.rpm, got.tpm, got.admin, got.last_used_at) == (3, None, True, None)
        listed = {(k.id, k.admin, k.rpm, k.tpm, p.id) for k, p in await meta.keys.list_api_keys()}
        assert listed == {("key_1", True, 3, None, a), ("key_2", False, None, 100, a), ("key_3", False, None, None, a),
                          ("key_4", False, None, None, b)}

        assert await meta.keys.revoke_api_key("key_2", 5)
        page = await meta.keys.list_project_api_keys(a, after=None, limit=1)
        assert [k.id for k in page.items] == ["key_1"] and page.has_more
        page = await meta.keys.list_project_api_keys(a, after="key_1", limit=5)
        assert [k.id for k in page.items] == ["key_3"] and not page.has_more  # the revoked key is gone
        assert (await meta.keys.list_project_api_keys(a, after="key_4", limit=5)).items == []  # another project's id

        updated = await meta.keys.set_api_key_limits("key_3", 10, None)
        assert updated is not None and (updated.rpm, updated.tpm) == (10, None)
        assert await meta.keys.set_api_key_limits("key_2", 10, 10) is None  # revoked

        everything = (await meta.keys.list_projects(after=None, limit=10)).items
        assert {p.id for p in everything} == {a, b, c}
        page = await meta.keys.list_projects(after=None, limit=2)
        assert page.items == everything[:2] and page.has_more
        rest = await meta.keys.list_projects(after=everything[0].id, limit=10)
        assert [p.id for p in rest.items] == [p.id for p in everything[1:]] and not rest.has_more
        assert (await meta.keys.list_projects(after="proj_unknown", limit=10)).items == []

    run(with_meta(meta_factory, body))


def test_project_limits_and_names(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        a = await meta.keys.get_or_create_project("a")
        b = await meta.keys.get_or_create_project("b")
        assert (a.rpm, a.tpm) == (None, None)
        await meta.keys.insert_api_key(key("key_1", a.id, 1))

        updated = await meta.keys.update_project(a.id, name="a", rpm=5, tpm=None)
        assert updated is not None and (updated.id, updated.name, updated.rpm, updated.tpm) == (a.id, "a", 5, None)
        assert await meta.keys.get_project(a.id) == updated
        assert await meta.keys.get_project_by_name("a") == updated
        assert await meta.keys.get_or_create_project("a") == updated
        assert updated in (await meta.keys.list_projects(after=None, limit=10)).items
        assert [p for k, p in await meta.keys.list_api_keys()] == [updated]  # a key's project carries its limits

        renamed = await meta.keys.update_project(a.id, name="alpha", rpm=5, tpm=7)
        assert renamed is not None and (renamed.name, renamed.rpm, renamed.tpm) == ("alpha", 5, 7)
        assert await meta.keys.get_project_by_name("a") is None
        assert await meta.keys.update_project(a.id, name="b", rpm=None, tpm=None) is None  # names stay unique
        assert await meta.keys.get_project(a.id) == renamed and await meta.keys.get_project(b.id) == b
        assert await meta.keys.update_project("proj_unknown", name="c", rpm=1, tpm=1) is None
        assert await meta.keys.get_project_by_name("c") is None

    run(with_meta(meta_factory, body))


def test_rate_usage_series_are_replaced_windowed_and_purged(meta_factory: Callable[[], MetadataStore]) -> None:  # noqa: F811
    async def body(meta: MetadataStore) -> None:
        usage = meta.usage
        a1 = RateUsage("procA-0", "key_1", "requests", 60, 3.0)
        b1 = RateUsage("procB-0", "key_1", "requests", 60, 2.0)
        assert await usage.exchange_rate_usage([a1], 1000, window=120, keep=600) == [a1]
        # Another process's exchange sees both series; `used` replaces (never adds to) the stored total.
        got = await usage.exchange_rate_usage([b1, RateUsage("procB-1", "proj_1", "tokens", 900, 40.5)], 1010,
                                              window=120, keep=600)
        assert got == [a1, b1, RateUsage("procB-1", "proj_1", "tokens", 900, 40.5)]
        again = RateUsage("procA-0", "key_1", "requests", 30, 5.0)
        got = await usage.exchange_rate_usage([again], 1100, window=120, keep=600)
        assert [(r.series, r.per_minute, r.used) for r in got] == [("procA-0", 30, 5.0), ("procB-0", 60, 2.0),
                                                                   ("procB-1", 900, 40.5)]
        # Nothing to store: a read only. Series not updated within the window are left out; the rows stay.
        got = await usage.exchange_rate_usage([], 1135, window=35, keep=600)
        assert [r.series for r in got] == ["procA-0"]
        assert [r.series for r in await usage.exchange_rate_usage([], 1135, window=200, keep=600)] == [
            "procA-0", "procB-0", "procB-1"]
        # A store deletes the rows idle for `keep`.
        await usage.exchange_rate_usage([RateUsage("procC-0", "key_2", "requests", 5, 1.0)], 1700, window=10_000,
                                        keep=600)
        assert [r.series for r in await usage.exchange_rate_usage([], 1700, window=10_000, keep=600)] == [
            "procA-0", "procC-0"]

    run(with_meta(meta_factory, body))
