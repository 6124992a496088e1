"""Usage on Postgres: per-minute counters added (upserted) in one transaction per batch, sums per bucket, and
training usage settled from the jobs table in the transaction that marks each job counted."""

from __future__ import annotations

from typing import Any

from inhouse.records import RateUsage, UsageRecord, UsageTotal
from inhouse.storage.postgres.database import Conn, PostgresDatabase, fetchall
from inhouse.storage.tables import FINE_TUNING_ENDPOINT
from inhouse.storage.tables import NO_KEY as _NO_KEY
from inhouse.storage.tables import USAGE_GROUPABLE as _GROUPABLE

# sum() of BIGINT is NUMERIC in Postgres: cast back so totals are ints, as on SQLite.
_SUMS = ("sum(requests)::bigint, sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(images)::bigint, "
         "sum(trained_tokens)::bigint")
_ADD = (
    "INSERT INTO usage_minutes AS u (minute, project_id, api_key_id, model, endpoint, requests, input_tokens, "
    "output_tokens, images, trained_tokens) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (minute, project_id, api_key_id, model, endpoint) DO UPDATE SET "
    "requests = u.requests + excluded.requests, input_tokens = u.input_tokens + excluded.input_tokens, "
    "output_tokens = u.output_tokens + excluded.output_tokens, images = u.images + excluded.images, "
    "trained_tokens = u.trained_tokens + excluded.trained_tokens"
)

_RATE_PUT = (
    "INSERT INTO rate_limit_usage (series, owner, kind, per_minute, used, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (series) DO UPDATE SET per_minute = excluded.per_minute, "
    "used = excluded.used, updated_at = excluded.updated_at"
)
_RATE_GET = ("SELECT series, owner, kind, per_minute, used FROM rate_limit_usage WHERE updated_at >= %s "
             "ORDER BY series")

Params = tuple[int, str, str, str, str, int, int, int, int, int]


async def _add(c: Conn, params: list[Params]) -> None:
    # Rows in primary-key order: two processes flushing overlapping rows lock them in the same order and so
    # wait for each other instead of deadlocking.
    params.sort(key=lambda p: p[:5])
    async with c.cursor() as cur:
        await cur.executemany(_ADD, params)


class PostgresUsage:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def add_usage(self, rows: list[UsageRecord], last_used: dict[str, int]) -> None:
        async with self.db.write() as c:
            await _add(c, [
                (r.minute, r.project_id, r.api_key_id or _NO_KEY, r.model, r.endpoint, r.requests, r.input_tokens,
                 r.output_tokens, r.images, r.trained_tokens) for r in rows
            ])
            async with c.cursor() as cur:
                await cur.executemany(
                    "UPDATE api_keys SET last_used_at = %s WHERE id = %s AND (last_used_at IS NULL OR "
                    "last_used_at < %s)",
                    [(at, key_id, at) for key_id, at in sorted(last_used.items())],
                )

    async def usage_totals(
        self, *, endpoints: tuple[str, ...], start: int, end: int, width: int, group_by: frozenset[str],
        project_ids: tuple[str, ...] | None = None, api_key_ids: tuple[str, ...] | None = None,
        models: tuple[str, ...] | None = None,
    ) -> list[UsageTotal]:
        where = ["minute >= %s", "minute < %s"]
        args: list[Any] = [start, end]
        keys = None if api_key_ids is None else tuple(k or _NO_KEY for k in api_key_ids)
        for column, values in (("endpoint", endpoints), ("project_id", project_ids), ("api_key_id", keys),
                               ("model", models)):
            if values is not None:
                where.append(f"{column} = ANY(%s::text[])")
                args.append(list(values))
        groups = [c for c in _GROUPABLE if c in group_by]
        picked = ", ".join(c if c in group_by else "NULL::text" for c in _GROUPABLE)
        order = ", ".join(["bucket", *groups])
        async with self.db.connection() as c:
            rows = await fetchall(
                c, f"SELECT (minute - %s::bigint) / %s::bigint AS bucket, {picked}, {_SUMS} FROM usage_minutes "
                   f"WHERE {' AND '.join(where)} GROUP BY {order} ORDER BY {order}",
                (start, width, *args),
            )
        return [UsageTotal(start + r[0] * width, r[1], None if r[2] == _NO_KEY else r[2], *r[3:]) for r in rows]

    async def settle_training_usage(self) -> int:
        async with self.db.write() as c:
            # SKIP LOCKED: jobs another process is settling right now are its to count; a job is counted only
            # by the transaction that flips its usage_counted.
            jobs = await fetchall(
                c, "SELECT seq, finished_at / 60 * 60, project_id, coalesce(api_key_id, ''), model, "
                   "coalesce(trained_tokens, 0) FROM fine_tuning_jobs WHERE status = 'succeeded' "
                   "AND NOT usage_counted ORDER BY seq FOR UPDATE SKIP LOCKED")
            await _add(c, [(minute, project, key, model, FINE_TUNING_ENDPOINT, 1, 0, 0, 0, tokens)
                           for _, minute, project, key, model, tokens in jobs])
            if jobs:
                await c.execute("UPDATE fine_tuning_jobs SET usage_counted = TRUE WHERE seq = ANY(%s)",
                                ([j[0] for j in jobs],))
        return len(jobs)

    async def exchange_rate_usage(self, mine: list[RateUsage], now: int, *, window: int,
                                  keep: int) -> list[RateUsage]:
        if mine:  # nothing to store: only the read
            async with self.db.write() as c, c.cursor() as cur:
                # Series are each one process's own: no two writers share a row, so no lock order matters.
                await cur.executemany(_RATE_PUT, [(u.series, u.owner, u.kind, u.per_minute, u.used, now)
                                                  for u in mine])
                # SKIP LOCKED: processes purging at once never wait on (or deadlock over) the same stale rows.
                await c.execute("DELETE FROM rate_limit_usage WHERE series IN (SELECT series FROM "
                                "rate_limit_usage WHERE updated_at < %s FOR UPDATE SKIP LOCKED)", (now - keep,))
        rows = await self.db.rows(_RATE_GET, (now - window,))
        return [RateUsage(r[0], r[1], r[2], int(r[3]), float(r[4])) for r in rows]
