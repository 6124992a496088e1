"""Fine-tuning jobs, events and checkpoints on SQLite. Every write a worker makes is guarded by its lease,
so a worker that lost its job (cancelled, paused, or taken over after a crash) can write nothing more."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from inhouse.storage.records import (
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    FineTuningJobRecord,
    ModelRecord,
    Page,
)
from inhouse.storage.sqlite_base import SqliteBase, leased, set_fields
from inhouse.storage.tables import CKPT_COLS as _CKPT_COLS
from inhouse.storage.tables import EVENT_COLS as _EVENT_COLS
from inhouse.storage.tables import JOB_ACTIVE, JOB_ACTIVE_SQL
from inhouse.storage.tables import JOB_COLS as _JOB_COLS
from inhouse.storage.tables import JOB_JSON as _JSON_JOB_FIELDS
from inhouse.storage.tables import JOB_TERMINAL as TERMINAL
from inhouse.storage.tables import JOB_UPDATABLE as _UPDATABLE
from inhouse.storage.tables import dump_json as _dump


def _load(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _job(row: tuple[Any, ...]) -> FineTuningJobRecord:
    names = [c.strip() for c in _JOB_COLS.split(",")]
    values = {n: (_load(v) if n in _JSON_JOB_FIELDS else v) for n, v in zip(names, row, strict=True)}
    return FineTuningJobRecord(**values)


def _event(row: tuple[Any, ...]) -> FineTuningEventRecord:
    return FineTuningEventRecord(row[0], row[1], row[2], row[3], row[4], row[5], _load(row[6]))


def _ckpt(row: tuple[Any, ...]) -> FineTuningCheckpointRecord:
    return FineTuningCheckpointRecord(row[0], row[1], row[2], row[3], row[4], _load(row[5]), row[6], row[7])


class SqliteFineTuning(SqliteBase):
    # -- helpers run inside a write transaction --------------------------------------------------------
    @staticmethod
    def _insert_event(c: sqlite3.Connection, e: FineTuningEventRecord) -> None:
        c.execute(f"INSERT INTO fine_tuning_events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (e.id, e.job_id, e.created_at, e.level, e.message, e.type, _dump(e.data)))

    @staticmethod
    def _owned(c: sqlite3.Connection, job_id: str, owner: str) -> bool:
        return leased(c, "fine_tuning_jobs", job_id, owner, TERMINAL, among=False)

    @staticmethod
    def _set(c: sqlite3.Connection, job_id: str, fields: dict[str, Any]) -> None:
        set_fields(c, "fine_tuning_jobs", job_id, fields, updatable=_UPDATABLE, json_fields=_JSON_JOB_FIELDS)

    def _get_job_any(self, job_id: str) -> FineTuningJobRecord | None:
        row = self.conn.execute(f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    # -- jobs ---------------------------------------------------------------------------------------------
    def _insert_job(self, j: FineTuningJobRecord, events: list[FineTuningEventRecord]) -> None:
        with self._write() as c:
            c.execute(
                f"INSERT INTO fine_tuning_jobs ({_JOB_COLS}) VALUES ({','.join('?' * 24)})",
                (j.id, j.project_id, j.created_at, j.model, j.base_model, j.parent_model, j.training_file,
                 j.validation_file, j.suffix, j.seed, _dump(j.method), _dump(j.hyperparameters), j.status,
                 _dump(j.error), j.fine_tuned_model, j.finished_at, j.trained_tokens, _dump(j.integrations),
                 _dump(j.metadata), _dump(j.result_files), j.estimated_finish, j.attempts, j.lease_owner,
                 j.lease_expires_at),
            )
            for e in events:
                self._insert_event(c, e)

    async def insert_job(self, job: FineTuningJobRecord, events: list[FineTuningEventRecord]) -> None:
        await self._run(self._insert_job, job, events)

    def _get_job(self, project_id: str, job_id: str) -> FineTuningJobRecord | None:
        row = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE id = ? AND project_id = ?", (job_id, project_id)
        ).fetchone()
        return _job(row) if row else None

    async def get_job(self, project_id: str, job_id: str) -> FineTuningJobRecord | None:
        return await self._run(self._get_job, project_id, job_id)

    async def get_job_any(self, job_id: str) -> FineTuningJobRecord | None:
        """For the worker, which is not acting for a caller."""
        return await self._run(self._get_job_any, job_id)

    def _list_jobs(
        self, project_id: str, after: str | None, limit: int, metadata: dict[str, str] | None, no_metadata: bool
    ) -> Page[FineTuningJobRecord]:
        where, args = ["project_id = ?"], [project_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_jobs WHERE id = ? AND project_id = ?)")
            args += [after, project_id]
        if no_metadata:
            where.append("(metadata IS NULL OR metadata = '{}')")
        for key, value in (metadata or {}).items():
            # json_each compares the key as a plain value: a key never becomes a JSON path, so quotes,
            # dots or brackets in it match literally (a path built from it could fail to parse).
            where.append("EXISTS (SELECT 1 FROM json_each(fine_tuning_jobs.metadata) AS m "
                         "WHERE m.key = ? AND m.value = ?)")
            args += [key, value]
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([_job(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_jobs(
        self, project_id: str, *, after: str | None, limit: int, metadata: dict[str, str] | None,
        no_metadata: bool = False,
    ) -> Page[FineTuningJobRecord]:
        return await self._run(self._list_jobs, project_id, after, limit, metadata, no_metadata)

    def _transition(
        self, project_id: str, job_id: str, allowed: tuple[str, ...], fields: dict[str, Any],
        event: FineTuningEventRecord | None,
    ) -> tuple[FineTuningJobRecord | None, bool]:
        """Move a job to a new state only from `allowed` ones, with its event, in one transaction."""
        with self._write() as c:
            row = c.execute(
                f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE id = ? AND project_id = ?", (job_id, project_id)
            ).fetchone()
            if row is None:
                return None, False
            job = _job(row)
            if job.status not in allowed:
                return job, False
            self._set(c, job_id, fields)
            if event is not None:
                self._insert_event(c, event)
        return self._get_job_any(job_id), True

    async def transition_job(
        self, project_id: str, job_id: str, *, allowed: tuple[str, ...], fields: dict[str, Any],
        event: FineTuningEventRecord | None,
    ) -> tuple[FineTuningJobRecord | None, bool]:
        return await self._run(self._transition, project_id, job_id, allowed, fields, event)

    def _claim_job(self, owner: str, at: int, lease_s: int) -> FineTuningJobRecord | None:
        with self._write() as c:
            row = c.execute(
                f"SELECT {_JOB_COLS} FROM fine_tuning_jobs WHERE {JOB_ACTIVE_SQL} "
                "AND (lease_owner IS NULL OR lease_expires_at < ?) ORDER BY seq LIMIT 1",
                (at,),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            c.execute(
                "UPDATE fine_tuning_jobs SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                (owner, at + lease_s, job.id),
            )
        return self._get_job_any(job.id)

    async def claim_job(self, owner: str, now: int, lease_s: int) -> FineTuningJobRecord | None:
        return await self._run(self._claim_job, owner, now, lease_s)

    def _heartbeat(self, job_id: str, owner: str, at: int, lease_s: int, fields: dict[str, Any]) -> str | None:
        with self._write() as c:
            row = c.execute(
                "SELECT status, lease_owner FROM fine_tuning_jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row[1] != owner:
                return None
            if row[0] in JOB_ACTIVE:
                self._set(c, job_id, {**fields, "lease_expires_at": at + lease_s})
            return str(row[0])

    async def heartbeat_job(self, job_id: str, owner: str, now: int, lease_s: int,
                            fields: dict[str, Any] | None = None) -> str | None:
        """Renew the lease; answers the job's status, or None when this worker no longer holds it."""
        return await self._run(self._heartbeat, job_id, owner, now, lease_s, fields or {})

    def _worker_update(self, job_id: str, owner: str, fields: dict[str, Any],
                       events: list[FineTuningEventRecord]) -> bool:
        with self._write() as c:
            if not self._owned(c, job_id, owner):
                return False
            self._set(c, job_id, fields)
            for e in events:
                self._insert_event(c, e)
        return True

    async def worker_update(self, job_id: str, owner: str, *, fields: dict[str, Any] | None = None,
                            events: list[FineTuningEventRecord] | None = None) -> bool:
        """A lease-guarded write: False (and nothing written) when the job is no longer this worker's."""
        return await self._run(self._worker_update, job_id, owner, fields or {}, events or [])

    def _release(self, job_id: str, owner: str) -> None:
        with self._write() as c:
            c.execute("UPDATE fine_tuning_jobs SET lease_owner = NULL, lease_expires_at = NULL "
                      "WHERE id = ? AND lease_owner = ?", (job_id, owner))

    async def release_job(self, job_id: str, owner: str) -> None:
        await self._run(self._release, job_id, owner)

    # -- events ---------------------------------------------------------------------------------------------
    def _list_events(self, job_id: str, after: str | None, limit: int) -> Page[FineTuningEventRecord]:
        where, args = ["job_id = ?"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_events WHERE id = ? AND job_id = ?)")
            args += [after, job_id]
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLS} FROM fine_tuning_events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([_event(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page[FineTuningEventRecord]:
        return await self._run(self._list_events, job_id, after, limit)

    def _last_metric_step(self, job_id: str) -> int:
        row = self.conn.execute(
            "SELECT max(json_extract(data, '$.step')) FROM fine_tuning_events WHERE job_id = ? AND type = 'metrics'",
            (job_id,),
        ).fetchone()
        return int(row[0] or 0)

    async def last_metric_step(self, job_id: str) -> int:
        return await self._run(self._last_metric_step, job_id)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _add_checkpoint(
        self, owner: str, ck: FineTuningCheckpointRecord, event: FineTuningEventRecord, keep: int
    ) -> list[str] | None:
        with self._write() as c:
            if not self._owned(c, ck.job_id, owner):
                return None
            c.execute(f"INSERT INTO fine_tuning_checkpoints ({_CKPT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (ck.id, ck.job_id, ck.created_at, ck.step_number, ck.epoch, _dump(ck.metrics),
                       ck.fine_tuned_model_checkpoint, ck.artifact_key))
            self._insert_event(c, event)
            old = c.execute(
                "SELECT id, artifact_key FROM fine_tuning_checkpoints WHERE job_id = ? ORDER BY seq DESC "
                "LIMIT -1 OFFSET ?", (ck.job_id, keep),
            ).fetchall()
            for ck_id, _ in old:
                c.execute("DELETE FROM fine_tuning_checkpoints WHERE id = ?", (ck_id,))
        return [key for _, key in old]

    async def add_checkpoint(self, owner: str, checkpoint: FineTuningCheckpointRecord,
                             event: FineTuningEventRecord, keep: int) -> list[str] | None:
        """Record a checkpoint (its bytes already durable) and drop the oldest beyond `keep`; answers the
        artifact keys no longer referenced, or None when the lease was lost."""
        return await self._run(self._add_checkpoint, owner, checkpoint, event, keep)

    def _list_checkpoints(self, job_id: str, after: str | None, limit: int) -> Page[FineTuningCheckpointRecord]:
        where, args = ["job_id = ?"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_checkpoints WHERE id = ? AND job_id = ?)")
            args += [after, job_id]
        rows = self.conn.execute(
            f"SELECT {_CKPT_COLS} FROM fine_tuning_checkpoints WHERE {' AND '.join(where)} ORDER BY seq DESC "
            "LIMIT ?", (*args, limit + 1),
        ).fetchall()
        return Page([_ckpt(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_checkpoints(self, job_id: str, *, after: str | None,
                               limit: int) -> Page[FineTuningCheckpointRecord]:
        return await self._run(self._list_checkpoints, job_id, after, limit)

    def _checkpoint_by_name(self, project_id: str, name: str) -> FineTuningCheckpointRecord | None:
        row = self.conn.execute(
            f"SELECT {', '.join('c.' + x.strip() for x in _CKPT_COLS.split(','))} FROM fine_tuning_checkpoints c "
            "JOIN fine_tuning_jobs j ON j.id = c.job_id WHERE c.fine_tuned_model_checkpoint = ? AND j.project_id = ?",
            (name, project_id),
        ).fetchone()
        return _ckpt(row) if row else None

    async def checkpoint_by_name(self, project_id: str, name: str) -> FineTuningCheckpointRecord | None:
        return await self._run(self._checkpoint_by_name, project_id, name)

    def _referenced_artifacts(self) -> set[str]:
        keys = {r[0] for r in self.conn.execute("SELECT artifact_key FROM fine_tuning_checkpoints")}
        keys |= {r[0] for r in self.conn.execute("SELECT artifact_key FROM models")}
        return keys

    async def referenced_artifacts(self) -> set[str]:
        return await self._run(self._referenced_artifacts)

    def _finish_success(self, job_id: str, owner: str, fields: dict[str, Any], model: ModelRecord,
                        events: list[FineTuningEventRecord]) -> bool:
        with self._write() as c:
            if not self._owned(c, job_id, owner):
                return False
            c.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (model.id, model.project_id, model.created, model.owned_by, model.kind, model.base_model,
                       model.artifact_key))
            self._set(c, job_id, {**fields, "lease_owner": None, "lease_expires_at": None})
            for e in events:
                self._insert_event(c, e)
        return True

    async def finish_job_success(self, job_id: str, owner: str, *, fields: dict[str, Any], model: ModelRecord,
                                 events: list[FineTuningEventRecord]) -> bool:
        """The fine-tuned model appears in /v1/models in the same transaction that marks the job succeeded."""
        return await self._run(self._finish_success, job_id, owner, fields, model, events)
