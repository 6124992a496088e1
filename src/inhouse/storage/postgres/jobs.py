"""Fine-tuning jobs, events and checkpoints on Postgres. Every write a worker makes is guarded by its lease (the
job's row locked while it is tested), and claims skip rows another claimer holds (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

from typing import Any

from inhouse.records import (
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    FineTuningJobRecord,
    ModelRecord,
    Page,
)
from inhouse.storage.postgres.database import (
    Conn,
    PostgresDatabase,
    Row,
    fetchall,
    fetchone,
    leased,
    load_json,
    set_fields,
)
from inhouse.storage.postgres.models import insert_model_row
from inhouse.storage.tables import (
    CKPT_COLS,
    EVENT_COLS,
    JOB_ACTIVE,
    JOB_ACTIVE_SQL,
    JOB_COLS,
    JOB_JSON,
    JOB_TERMINAL,
    JOB_UPDATABLE,
    dump_json,
)

_JOB_NAMES = [c.strip() for c in JOB_COLS.split(",")]


def _job(row: Row) -> FineTuningJobRecord:
    values = {n: (load_json(v) if n in JOB_JSON else v) for n, v in zip(_JOB_NAMES, row, strict=True)}
    return FineTuningJobRecord(**values)


def _event(row: Row) -> FineTuningEventRecord:
    return FineTuningEventRecord(row[0], row[1], row[2], row[3], row[4], row[5], load_json(row[6]))


def _ckpt(row: Row) -> FineTuningCheckpointRecord:
    return FineTuningCheckpointRecord(row[0], row[1], row[2], row[3], row[4], load_json(row[5]), row[6], row[7])


# -- run inside a write transaction --------------------------------------------------------------------------
async def _insert_event(c: Conn, e: FineTuningEventRecord) -> None:
    await c.execute(f"INSERT INTO fine_tuning_events ({EVENT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (e.id, e.job_id, e.created_at, e.level, e.message, e.type, dump_json(e.data)))


async def _owned(c: Conn, job_id: str, owner: str) -> bool:
    return await leased(c, "fine_tuning_jobs", job_id, owner, JOB_TERMINAL, among=False)


async def _set(c: Conn, job_id: str, fields: dict[str, Any]) -> None:
    await set_fields(c, "fine_tuning_jobs", job_id, fields, updatable=JOB_UPDATABLE, json_fields=JOB_JSON)


class PostgresJobs:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    # -- jobs -----------------------------------------------------------------------------------------------
    async def insert_job(self, job: FineTuningJobRecord, events: list[FineTuningEventRecord]) -> None:
        j = job
        async with self.db.write() as c:
            await c.execute(
                f"INSERT INTO fine_tuning_jobs ({JOB_COLS}) VALUES ({', '.join(['%s'] * len(_JOB_NAMES))})",
                (j.id, j.project_id, j.created_at, j.model, j.base_model, j.parent_model, j.training_file,
                 j.validation_file, j.suffix, j.seed, dump_json(j.method), dump_json(j.hyperparameters), j.status,
                 dump_json(j.error), j.fine_tuned_model, j.finished_at, j.trained_tokens, dump_json(j.integrations),
                 dump_json(j.metadata), dump_json(j.result_files), j.estimated_finish, j.attempts, j.lease_owner,
                 j.lease_expires_at),
            )
            for e in events:
                await _insert_event(c, e)

    async def set_job_api_key(self, job_id: str, api_key_id: str) -> None:
        async with self.db.write() as c:
            await c.execute("UPDATE fine_tuning_jobs SET api_key_id = %s WHERE id = %s", (api_key_id, job_id))

    async def get_job(self, project_id: str, job_id: str) -> FineTuningJobRecord | None:
        row = await self.db.one(f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = %s AND project_id = %s",
                                (job_id, project_id))
        return _job(row) if row else None

    async def get_job_any(self, job_id: str) -> FineTuningJobRecord | None:
        row = await self.db.one(f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = %s", (job_id,))
        return _job(row) if row else None

    async def list_jobs(
        self, project_id: str, *, after: str | None, limit: int, metadata: dict[str, str] | None,
        no_metadata: bool = False,
    ) -> Page[FineTuningJobRecord]:
        where, args = ["project_id = %s"], [project_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_jobs WHERE id = %s AND project_id = %s)")
            args += [after, project_id]
        if no_metadata:
            where.append("(metadata IS NULL OR metadata = '{}')")
        for key, value in (metadata or {}).items():
            # Containment of a one-pair object built from the key as a value: the key never becomes a JSON
            # path, so quotes, dots or brackets in it match literally (as json_each does on SQLite).
            where.append("metadata::jsonb @> jsonb_build_object(%s::text, %s::text)")
            args += [key, value]
        rows = await self.db.rows(
            f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s",
            (*args, limit + 1),
        )
        return Page([_job(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def transition_job(
        self, project_id: str, job_id: str, *, allowed: tuple[str, ...], fields: dict[str, Any],
        event: FineTuningEventRecord | None,
    ) -> tuple[FineTuningJobRecord | None, bool]:
        async with self.db.write() as c:
            row = await fetchone(
                c, f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = %s AND project_id = %s FOR UPDATE",
                (job_id, project_id))
            if row is None:
                return None, False
            job = _job(row)
            if job.status not in allowed:
                return job, False
            await _set(c, job_id, fields)
            if event is not None:
                await _insert_event(c, event)
            after = await fetchone(c, f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = %s", (job_id,))
        return (_job(after) if after else None), True

    async def claim_job(self, owner: str, now: int, lease_s: int) -> FineTuningJobRecord | None:
        async with self.db.write() as c:
            # SKIP LOCKED: a job another claimer is taking right now is passed over, never handed out twice.
            row = await fetchone(
                c, f"SELECT id FROM fine_tuning_jobs WHERE {JOB_ACTIVE_SQL} "
                   "AND (lease_owner IS NULL OR lease_expires_at < %s) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                (now,))
            if row is None:
                return None
            claimed = await fetchone(
                c, "UPDATE fine_tuning_jobs SET lease_owner = %s, lease_expires_at = %s, attempts = attempts + 1 "
                   f"WHERE id = %s RETURNING {JOB_COLS}", (owner, now + lease_s, row[0]))
        return _job(claimed) if claimed else None

    async def heartbeat_job(self, job_id: str, owner: str, now: int, lease_s: int,
                            fields: dict[str, Any] | None = None) -> str | None:
        async with self.db.write() as c:
            row = await fetchone(c, "SELECT status, lease_owner FROM fine_tuning_jobs WHERE id = %s FOR UPDATE",
                                 (job_id,))
            if row is None or row[1] != owner:
                return None
            if row[0] in JOB_ACTIVE:
                await _set(c, job_id, {**(fields or {}), "lease_expires_at": now + lease_s})
            return str(row[0])

    async def worker_update(self, job_id: str, owner: str, *, fields: dict[str, Any] | None = None,
                            events: list[FineTuningEventRecord] | None = None) -> bool:
        async with self.db.write() as c:
            if not await _owned(c, job_id, owner):
                return False
            await _set(c, job_id, fields or {})
            for e in events or []:
                await _insert_event(c, e)
        return True

    async def release_job(self, job_id: str, owner: str) -> None:
        async with self.db.write() as c:
            await c.execute("UPDATE fine_tuning_jobs SET lease_owner = NULL, lease_expires_at = NULL "
                            "WHERE id = %s AND lease_owner = %s", (job_id, owner))

    async def finish_job_success(self, job_id: str, owner: str, *, fields: dict[str, Any], model: ModelRecord,
                                 events: list[FineTuningEventRecord]) -> bool:
        async with self.db.write() as c:
            if not await _owned(c, job_id, owner):
                return False
            await insert_model_row(c, model)
            await _set(c, job_id, {**fields, "lease_owner": None, "lease_expires_at": None})
            for e in events:
                await _insert_event(c, e)
        return True

    # -- events ---------------------------------------------------------------------------------------------
    async def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page[FineTuningEventRecord]:
        where, args = ["job_id = %s"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_events WHERE id = %s AND job_id = %s)")
            args += [after, job_id]
        rows = await self.db.rows(
            f"SELECT {EVENT_COLS} FROM fine_tuning_events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s",
            (*args, limit + 1),
        )
        return Page([_event(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def last_metric_step(self, job_id: str) -> int:
        row = await self.db.one(
            "SELECT max((data::jsonb ->> 'step')::numeric) FROM fine_tuning_events "
            "WHERE job_id = %s AND type = 'metrics'", (job_id,))
        return int(row[0] or 0) if row else 0

    # -- checkpoints ----------------------------------------------------------------------------------------
    async def add_checkpoint(self, owner: str, checkpoint: FineTuningCheckpointRecord,
                             event: FineTuningEventRecord, keep: int) -> list[str] | None:
        ck = checkpoint
        async with self.db.write() as c:
            if not await _owned(c, ck.job_id, owner):
                return None
            await c.execute(
                f"INSERT INTO fine_tuning_checkpoints ({CKPT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (ck.id, ck.job_id, ck.created_at, ck.step_number, ck.epoch, dump_json(ck.metrics),
                 ck.fine_tuned_model_checkpoint, ck.artifact_key))
            await _insert_event(c, event)
            old = await fetchall(
                c, "SELECT id, artifact_key FROM fine_tuning_checkpoints WHERE job_id = %s ORDER BY seq DESC "
                   "OFFSET %s", (ck.job_id, keep))
            if old:
                await c.execute("DELETE FROM fine_tuning_checkpoints WHERE id = ANY(%s)", ([r[0] for r in old],))
        return [key for _, key in old]

    async def list_checkpoints(self, job_id: str, *, after: str | None,
                               limit: int) -> Page[FineTuningCheckpointRecord]:
        where, args = ["job_id = %s"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_checkpoints WHERE id = %s AND job_id = %s)")
            args += [after, job_id]
        rows = await self.db.rows(
            f"SELECT {CKPT_COLS} FROM fine_tuning_checkpoints WHERE {' AND '.join(where)} ORDER BY seq DESC "
            "LIMIT %s", (*args, limit + 1),
        )
        return Page([_ckpt(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def checkpoint_by_name(self, project_id: str, name: str) -> FineTuningCheckpointRecord | None:
        row = await self.db.one(
            f"SELECT {', '.join('c.' + x.strip() for x in CKPT_COLS.split(','))} FROM fine_tuning_checkpoints c "
            "JOIN fine_tuning_jobs j ON j.id = c.job_id WHERE c.fine_tuned_model_checkpoint = %s "
            "AND j.project_id = %s", (name, project_id),
        )
        return _ckpt(row) if row else None

    async def referenced_artifacts(self) -> set[str]:
        rows = await self.db.rows(
            "SELECT artifact_key FROM fine_tuning_checkpoints UNION SELECT artifact_key FROM models")
        return {r[0] for r in rows}
