"""Usage on SQLite: per-minute counters added in one transaction per batch, sums per time bucket, and training
usage settled from the jobs table in the transaction that marks each job counted."""

from __future__ import annotations

from typing import Any

from inhouse.records import RateUsage, UsageRecord, UsageTotal
from inhouse.storage.sqlite.database import SqliteDatabase, on_db_thread
from inhouse.storage.tables import FINE_TUNING_ENDPOINT, NO_KEY, USAGE_GROUPABLE

_SUMS = "sum(requests), sum(input_tokens), sum(output_tokens), sum(images), sum(trained_tokens)"
_ADD = (
    "INSERT INTO usage_minutes (minute, project_id, api_key_id, model, endpoint, requests, input_tokens, "
    "output_tokens, images, trained_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (minute, project_id, api_key_id, model, endpoint) DO UPDATE SET "
    "requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens, images = images + excluded.images, "
    "trained_tokens = trained_tokens + excluded.trained_tokens"
)

_RATE_PUT = (
    "INSERT INTO rate_limit_usage (series, owner, kind, per_minute, used, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (series) DO UPDATE SET per_minute = excluded.per_minute, used = excluded.used, "
    "updated_at = excluded.updated_at"
)
_RATE_GET = "SELECT series, owner, kind, per_minute, used FROM rate_limit_usage WHERE updated_at >= ? ORDER BY series"


class SqliteUsage:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def add_usage(self, rows: list[UsageRecord], last_used: dict[str, int]) -> None:
        with self.db.write() as c:
            c.executemany(_ADD, [
                (r.minute, r.project_id, r.api_key_id or NO_KEY, r.model, r.endpoint, r.requests, r.input_tokens,
                 r.output_tokens, r.images, r.trained_tokens) for r in rows
            ])
            c.executemany(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                [(at, key_id, at) for key_id, at in last_used.items()],
            )

    @on_db_thread
    def usage_totals(
        self, *, endpoints: tuple[str, ...], start: int, end: int, width: int, group_by: frozenset[str],
        project_ids: tuple[str, ...] | None = None, api_key_ids: tuple[str, ...] | None = None,
        models: tuple[str, ...] | None = None,
    ) -> list[UsageTotal]:
        where = ["minute >= ?", "minute < ?"]
        args: list[Any] = [start, end]
        keys = None if api_key_ids is None else tuple(k or NO_KEY for k in api_key_ids)
        for column, values in (("endpoint", endpoints), ("project_id", project_ids), ("api_key_id", keys),
                               ("model", models)):
            if values is not None:
                where.append(f"{column} IN ({','.join('?' * len(values))})" if values else "0")
                args += values
        groups = [c for c in USAGE_GROUPABLE if c in group_by]
        picked = ", ".join(c if c in group_by else "NULL" for c in USAGE_GROUPABLE)
        rows = self.db.conn.execute(
            f"SELECT (minute - ?) / ? AS bucket, {picked}, {_SUMS} FROM usage_minutes WHERE {' AND '.join(where)} "
            f"GROUP BY {', '.join(['bucket', *groups])} ORDER BY {', '.join(['bucket', *groups])}",
            (start, width, *args),
        ).fetchall()
        return [UsageTotal(start + r[0] * width, r[1], None if r[2] == NO_KEY else r[2], *r[3:]) for r in rows]

    @on_db_thread
    def settle_training_usage(self) -> int:
        with self.db.write() as c:
            jobs = c.execute(
                "SELECT seq, finished_at / 60 * 60, project_id, coalesce(api_key_id, ''), model, "
                "coalesce(trained_tokens, 0) FROM fine_tuning_jobs WHERE status = 'succeeded' AND usage_counted = 0"
            ).fetchall()
            c.executemany(_ADD, [(minute, project, key, model, FINE_TUNING_ENDPOINT, 1, 0, 0, 0, tokens)
                                 for _, minute, project, key, model, tokens in jobs])
            c.executemany("UPDATE fine_tuning_jobs SET usage_counted = 1 WHERE seq = ?", [(j[0],) for j in jobs])
        return len(jobs)

    @on_db_thread
    def exchange_rate_usage(self, mine: list[RateUsage], now: int, *, window: int, keep: int) -> list[RateUsage]:
        if mine:  # nothing to store: a read, no write transaction (and no fsync) every second
            with self.db.write() as c:
                c.executemany(_RATE_PUT, [(u.series, u.owner, u.kind, u.per_minute, u.used, now) for u in mine])
                c.execute("DELETE FROM rate_limit_usage WHERE updated_at < ?", (now - keep,))
        rows = self.db.conn.execute(_RATE_GET, (now - window,)).fetchall()
        return [RateUsage(*r) for r in rows]
