"""Fine-tuning jobs, events and checkpoints on Postgres. Every write a worker makes is guarded by its lease (the
job's row locked while it is tested), and claims skip rows another claimer holds (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

from typing import Any

from inhouse.storage.postgres_base import (
    Conn,
    PostgresBase,
    Row,
    fetchall,
    fetchone,
    leased,
    load_json,
    set_fields,
)
from inhouse.storage.records import (
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    FineTuningJobRecord,
    ModelRecord,
    Page,
)
from inhouse.storage.tables import CKPT_COLS as _CKPT_COLS
from inhouse.storage.tables import EVENT_COLS as _EVENT_COLS
from inhouse.storage.tables import JOB_ACTIVE, JOB_ACTIVE_SQL, dump_json
from inhouse.storage.tables import JOB_COLS as _JOB_COLS
from inhouse.storage.tables import JOB_JSON as _JSON_JOB_FIELDS
from inhouse.storage.tables import JOB_TERMINAL as TERMINAL
from inhouse.storage.tables import JOB_UPDATABLE as _UPDATABLE
from inhouse.storage.tables import MODEL_COLS as _MODEL_COLS

_JOB_NAMES = [c.strip() for c in _JOB_COLS.split(",")]
_CLAIMABLE = JOB_ACTIVE_SQL


def _job(row: Row) -> FineTuningJobRecord:
    values = {n: (load_json(v) if n in _JSON_JOB_FIELDS else v) for n, v in zip(_JOB_NAMES, row, strict=True)}
    return FineTuningJobRecord(**values)


def _event(row: Row) -> FineTuningEventRecord:
    return FineTuningEventRecord(row[0], row[1], row[2], row[3], row[4], row[5], load_json(row[6]))


def _ckpt(row: Row) -> FineTuningCheckpointRecord:
    return FineTuningCheckpointRecord(row[0], row[1], row[2], row[3], row[4], load_json(row[5]), row[6], row[7])


async def insert_model(c: Conn, m: ModelRecord) -> None:
    await c.execute(f"INSERT INTO models ({_MODEL_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (m.id, m.project_id, m.created, m.owned_by, m.kind, m.base_model, m.artifact_key))


class PostgresFineTuning(PostgresBase):
    # -- helpers run inside a write transaction --------------------------------------------------------
    @staticmethod
    async def _insert_event(c: Conn, e: FineTuningEventRecord) -> None:
        await c.execute(f"INSERT INTO fine_tuning_events ({_EVENT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (e.id, e.job_id, e.created_at, e.level, e.message, e.type, dump_json(e.data)))

    @staticmethod
    async def _owned(c: Conn, job_id: str, owner: str) -> bool:
        return await leased(c, "fine_tuning_jobs", job_id, owner, TERMINAL, among=False)

    @staticmethod
    async def _set(c: Conn, job_id: str, fields: dict[str, Any]) -> None:
        await set_fields(c, "fine_tuning_jobs", job_id, fields, updatable=_UPDATABLE, json_fields=_JSON_JOB_FIELDS)

    # -- jobs ---------------------------------------------------------------------------------------------
    async def insert_job(self, job: FineTuningJobRecord, events: list[FineTuningEventRecord]) -> None:
        j = job
        async with self._write() as c:
            await c.execute(
                f"INSERT INTO fine_tuning_jobs ({_JOB_COLS}) VALUES ({', '.join(['%s'] * 24)})",
                (j.id, j.project_id, j.created_at, j.model, j.base_model, j.parent_model, j.training_file,
                 j.validation_file, j.suffix, j.seed, dump_json(j.method), dump_json(j.hyperparameters), j.status,
                 dump_json(j.error), j.fine_tuned_model, j.finished_at, j.trained_tokens, dump_json(j.integrations),
                 dump_json(j.metadata), dump_json(j.result_files), j.estimated_finish, j.attempts, j.lease_owner,
                 j.lease_expires_at),
            )
            for e in events:
                await self._insert_event(c, e)

    async def get_job(self, project_id: str, job_id: str) -> FineTuningJobRecord | None:
        row = await self._one(f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE id = %s AND project_id = %s",
                              (job_id, project_id))
        return _job(row) if row else None

    async def get_job_any(self, job_id: str) -> FineTuningJobRecord | None:
        """For the worker, which is not acting for a caller."""
        row = await self._one(f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE id = %s", (job_id,))
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
        rows = await self._all(
            f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s",
            (*args, limit + 1),
        )
        return Page([_job(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def transition_job(
        self, project_id: str, job_id: str, *, allowed: tuple[str, ...], fields: dict[str, Any],
        event: FineTuningEventRecord | None,
    ) -> tuple[FineTuningJobRecord | None, bool]:
        """Move a job to a new state only from `allowed` ones, with its event, in one transaction."""
        async with self._write() as c:
            row = await fetchone(
                c, f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE id = %s AND project_id = %s FOR UPDATE",
                (job_id, project_id))
            if row is None:
                return None, False
            job = _job(row)
            if job.status not in allowed:
                return job, False
            await self._set(c, job_id, fields)
            if event is not None:
                await self._insert_event(c, event)
        return await self.get_job_any(job_id), True

    async def claim_job(self, owner: str, now: int, lease_s: int) -> FineTuningJobRecord | None:
        async with self._write() as c:
            # SKIP LOCKED: a job another claimer is taking right now is passed over, never handed out twice.
            row = await fetchone(
                c, f"SELECT id FROM fine_tuning_jobs WHERE {_CLAIMABLE} "
                   "AND (lease_owner IS NULL OR lease_expires_at < %s) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                (now,))
            if row is None:
                return None
            claimed = await fetchone(
                c, "UPDATE fine_tuning_jobs SET lease_owner = %s, lease_expires_at = %s, attempts = attempts + 1 "
                   f"WHERE id = %s RETURNING {_JOB_COLS}", (owner, now + lease_s, row[0]))
        return _job(claimed) if claimed else None

    async def heartbeat_job(self, job_id: str, owner: str, now: int, lease_s: int,
                            fields: dict[str, Any] | None = None) -> str | None:
        """Renew the lease; answers the job's status, or None when this worker no longer holds it."""
        async with self._write() as c:
            row = await fetchone(c, "SELECT status, lease_owner FROM fine_tuning_jobs WHERE id = %s FOR UPDATE",
                                 (job_id,))
            if row is None or row[1] != owner:
                return None
            if row[0] in JOB_ACTIVE:
                await self._set(c, job_id, {**(fields or {}), "lease_expires_at": now + lease_s})
            return str(row[0])

    async def worker_update(self, job_id: str, owner: str, *, fields: dict[str, Any] | None = None,
                            events: list[FineTuningEventRecord] | None = None) -> bool:
        """A lease-guarded write: False (and nothing written) when the job is no longer this worker's."""
        async with self._write() as c:
            if not await self._owned(c, job_id, owner):
                return False
            await self._set(c, job_id, fields or {})
            for e in events or []:
                await self._insert_event(c, e)
        return True

    async def release_job(self, job_id: str, owner: str) -> None:
        async with self._write() as c:
            await c.execute("UPDATE fine_tuning_jobs SET lease_owner = NULL, lease_expires_at = NULL "
                            "WHERE id = %s AND lease_owner = %s", (job_id, owner))

    # -- events ---------------------------------------------------------------------------------------------
    async def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page[FineTuningEventRecord]:
        where, args = ["job_id = %s"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_events WHERE id = %s AND job_id = %s)")
            args += [after, job_id]
        rows = await self._all(
            f"SELECT {_EVENT_COLS} FROM fine_tuning_events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s",
            (*args, limit + 1),
        )
        return Page([_event(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def last_metric_step(self, job_id: str) -> int:
        row = await self._one(
            "SELECT max((data::jsonb ->> 'step')::numeric) FROM fine_tuning_events "
            "WHERE job_id = %s AND type = 'metrics'", (job_id,))
        return int(row[0] or 0) if row else 0

    # -- checkpoints ------------------------------------------------------------------------------------------
    async def add_checkpoint(self, owner: str, checkpoint: FineTuningCheckpointRecord,
                             event: FineTuningEventRecord, keep: int) -> list[str] | None:
        """Record a checkpoint (its bytes already durable) and drop the oldest beyond `keep`; answers the
        artifact keys no longer referenced, or None when the lease was lost."""
        ck = checkpoint
        async with self._write() as c:
            if not await self._owned(c, ck.job_id, owner):
                return None
            await c.execute(
                f"INSERT INTO fine_tuning_checkpoints ({_CKPT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (ck.id, ck.job_id, ck.created_at, ck.step_number, ck.epoch, dump_json(ck.metrics),
                 ck.fine_tuned_model_checkpoint, ck.artifact_key))
            await self._insert_event(c, event)
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
        rows = await self._all(
            f"SELECT {_CKPT_COLS} FROM fine_tuning_checkpoints WHERE {' AND '.join(where)} ORDER BY seq DESC "
            "LIMIT %s", (*args, limit + 1),
        )
        return Page([_ckpt(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def checkpoint_by_name(self, project_id: str, name: str) -> FineTuningCheckpointRecord | None:
        row = await self._one(
            f"SELECT {', '.join('c.' + x.strip() for x in _CKPT_COLS.split(','))} FROM fine_tuning_checkpoints c "
            "JOIN fine_tuning_jobs j ON j.id = c.job_id WHERE c.fine_tuned_model_checkpoint = %s "
            "AND j.project_id = %s", (name, project_id),
        )
        return _ckpt(row) if row else None

    async def referenced_artifacts(self) -> set[str]:
        rows = await self._all("SELECT artifact_key FROM fine_tuning_checkpoints UNION SELECT artifact_key FROM models")
        return {r[0] for r in rows}

    async def finish_job_success(self, job_id: str, owner: str, *, fields: dict[str, Any], model: ModelRecord,
                                 events: list[FineTuningEventRecord]) -> bool:
        """The fine-tuned model appears in /v1/models in the same transaction that marks the job succeeded."""
        async with self._write() as c:
            if not await self._owned(c, job_id, owner):
                return False
            await insert_model(c, model)
            await self._set(c, job_id, {**fields, "lease_owner": None, "lease_expires_at": None})
            for e in events:
                await self._insert_event(c, e)
        return True
