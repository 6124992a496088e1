"""Fine-tuning jobs, events and checkpoints on SQLite. Every write a worker makes is tested against its lease in
the write transaction that makes it (BEGIN IMMEDIATE: nothing can claim the job in between)."""

from __future__ import annotations

import sqlite3
from typing import Any

from inhouse.records import (
    FineTuningCheckpointRecord,
    FineTuningEventRecord,
    FineTuningJobRecord,
    ModelRecord,
    Page,
)
from inhouse.storage.sqlite.database import SqliteDatabase, leased, load_json, on_db_thread, set_fields
from inhouse.storage.sqlite.models import insert_model_row
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


def _job(row: tuple[Any, ...]) -> FineTuningJobRecord:
    values = {n: (load_json(v) if n in JOB_JSON else v) for n, v in zip(_JOB_NAMES, row, strict=True)}
    return FineTuningJobRecord(**values)


def _event(row: tuple[Any, ...]) -> FineTuningEventRecord:
    return FineTuningEventRecord(row[0], row[1], row[2], row[3], row[4], row[5], load_json(row[6]))


def _ckpt(row: tuple[Any, ...]) -> FineTuningCheckpointRecord:
    return FineTuningCheckpointRecord(row[0], row[1], row[2], row[3], row[4], load_json(row[5]), row[6], row[7])


# -- run inside a write transaction --------------------------------------------------------------------------
def _insert_event(c: sqlite3.Connection, e: FineTuningEventRecord) -> None:
    c.execute(f"INSERT INTO fine_tuning_events ({EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
              (e.id, e.job_id, e.created_at, e.level, e.message, e.type, dump_json(e.data)))


def _owned(c: sqlite3.Connection, job_id: str, owner: str) -> bool:
    return leased(c, "fine_tuning_jobs", job_id, owner, JOB_TERMINAL, among=False)


def _set(c: sqlite3.Connection, job_id: str, fields: dict[str, Any]) -> None:
    set_fields(c, "fine_tuning_jobs", job_id, fields, updatable=JOB_UPDATABLE, json_fields=JOB_JSON)


def _job_any(c: sqlite3.Connection, job_id: str) -> FineTuningJobRecord | None:
    row = c.execute(f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


class SqliteJobs:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    # -- jobs -----------------------------------------------------------------------------------------------
    @on_db_thread
    def insert_job(self, job: FineTuningJobRecord, events: list[FineTuningEventRecord]) -> None:
        j = job
        with self.db.write() as c:
            c.execute(
                f"INSERT INTO fine_tuning_jobs ({JOB_COLS}) VALUES ({','.join('?' * len(_JOB_NAMES))})",
                (j.id, j.project_id, j.created_at, j.model, j.base_model, j.parent_model, j.training_file,
                 j.validation_file, j.suffix, j.seed, dump_json(j.method), dump_json(j.hyperparameters), j.status,
                 dump_json(j.error), j.fine_tuned_model, j.finished_at, j.trained_tokens, dump_json(j.integrations),
                 dump_json(j.metadata), dump_json(j.result_files), j.estimated_finish, j.attempts, j.lease_owner,
                 j.lease_expires_at),
            )
            for e in events:
                _insert_event(c, e)

    @on_db_thread
    def set_job_api_key(self, job_id: str, api_key_id: str) -> None:
        with self.db.write() as c:
            c.execute("UPDATE fine_tuning_jobs SET api_key_id = ? WHERE id = ?", (api_key_id, job_id))

    @on_db_thread
    def get_job(self, project_id: str, job_id: str) -> FineTuningJobRecord | None:
        row = self.db.conn.execute(
            f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = ? AND project_id = ?", (job_id, project_id)
        ).fetchone()
        return _job(row) if row else None

    @on_db_thread
    def get_job_any(self, job_id: str) -> FineTuningJobRecord | None:
        return _job_any(self.db.conn, job_id)

    @on_db_thread
    def list_jobs(
        self, project_id: str, *, after: str | None, limit: int, metadata: dict[str, str] | None,
        no_metadata: bool = False,
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
        rows = self.db.conn.execute(
            f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([_job(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def transition_job(
        self, project_id: str, job_id: str, *, allowed: tuple[str, ...], fields: dict[str, Any],
        event: FineTuningEventRecord | None,
    ) -> tuple[FineTuningJobRecord | None, bool]:
        with self.db.write() as c:
            row = c.execute(
                f"SELECT {JOB_COLS} FROM fine_tuning_jobs WHERE id = ? AND project_id = ?", (job_id, project_id)
            ).fetchone()
            if row is None:
                return None, False
            job = _job(row)
            if job.status not in allowed:
                return job, False
            _set(c, job_id, fields)
            if event is not None:
                _insert_event(c, event)
            return _job_any(c, job_id), True

    @on_db_thread
    def claim_job(self, owner: str, now: int, lease_s: int) -> FineTuningJobRecord | None:
        with self.db.write() as c:
            row = c.execute(
                f"SELECT id FROM fine_tuning_jobs WHERE {JOB_ACTIVE_SQL} "
                "AND (lease_owner IS NULL OR lease_expires_at < ?) ORDER BY seq LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE fine_tuning_jobs SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                (owner, now + lease_s, row[0]),
            )
            return _job_any(c, row[0])

    @on_db_thread
    def heartbeat_job(self, job_id: str, owner: str, now: int, lease_s: int,
                      fields: dict[str, Any] | None = None) -> str | None:
        with self.db.write() as c:
            row = c.execute("SELECT status, lease_owner FROM fine_tuning_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[1] != owner:
                return None
            if row[0] in JOB_ACTIVE:
                _set(c, job_id, {**(fields or {}), "lease_expires_at": now + lease_s})
            return str(row[0])

    @on_db_thread
    def worker_update(self, job_id: str, owner: str, *, fields: dict[str, Any] | None = None,
                      events: list[FineTuningEventRecord] | None = None) -> bool:
        with self.db.write() as c:
            if not _owned(c, job_id, owner):
                return False
            _set(c, job_id, fields or {})
            for e in events or []:
                _insert_event(c, e)
        return True

    @on_db_thread
    def release_job(self, job_id: str, owner: str) -> None:
        with self.db.write() as c:
            c.execute("UPDATE fine_tuning_jobs SET lease_owner = NULL, lease_expires_at = NULL "
                      "WHERE id = ? AND lease_owner = ?", (job_id, owner))

    @on_db_thread
    def finish_job_success(self, job_id: str, owner: str, *, fields: dict[str, Any], model: ModelRecord,
                           events: list[FineTuningEventRecord]) -> bool:
        with self.db.write() as c:
            if not _owned(c, job_id, owner):
                return False
            insert_model_row(c, model)
            _set(c, job_id, {**fields, "lease_owner": None, "lease_expires_at": None})
            for e in events:
                _insert_event(c, e)
        return True

    # -- events ---------------------------------------------------------------------------------------------
    @on_db_thread
    def list_events(self, job_id: str, *, after: str | None, limit: int) -> Page[FineTuningEventRecord]:
        where, args = ["job_id = ?"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_events WHERE id = ? AND job_id = ?)")
            args += [after, job_id]
        rows = self.db.conn.execute(
            f"SELECT {EVENT_COLS} FROM fine_tuning_events WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([_event(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def last_metric_step(self, job_id: str) -> int:
        row = self.db.conn.execute(
            "SELECT max(json_extract(data, '$.step')) FROM fine_tuning_events WHERE job_id = ? AND type = 'metrics'",
            (job_id,),
        ).fetchone()
        return int(row[0] or 0)

    # -- checkpoints ----------------------------------------------------------------------------------------
    @on_db_thread
    def add_checkpoint(self, owner: str, checkpoint: FineTuningCheckpointRecord,
                       event: FineTuningEventRecord, keep: int) -> list[str] | None:
        ck = checkpoint
        with self.db.write() as c:
            if not _owned(c, ck.job_id, owner):
                return None
            c.execute(f"INSERT INTO fine_tuning_checkpoints ({CKPT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (ck.id, ck.job_id, ck.created_at, ck.step_number, ck.epoch, dump_json(ck.metrics),
                       ck.fine_tuned_model_checkpoint, ck.artifact_key))
            _insert_event(c, event)
            old = c.execute(
                "SELECT id, artifact_key FROM fine_tuning_checkpoints WHERE job_id = ? ORDER BY seq DESC "
                "LIMIT -1 OFFSET ?", (ck.job_id, keep),
            ).fetchall()
            for ck_id, _ in old:
                c.execute("DELETE FROM fine_tuning_checkpoints WHERE id = ?", (ck_id,))
        return [key for _, key in old]

    @on_db_thread
    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> Page[FineTuningCheckpointRecord]:
        where, args = ["job_id = ?"], [job_id]
        if after is not None:
            where.append("seq < (SELECT seq FROM fine_tuning_checkpoints WHERE id = ? AND job_id = ?)")
            args += [after, job_id]
        rows = self.db.conn.execute(
            f"SELECT {CKPT_COLS} FROM fine_tuning_checkpoints WHERE {' AND '.join(where)} ORDER BY seq DESC "
            "LIMIT ?", (*args, limit + 1),
        ).fetchall()
        return Page([_ckpt(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def checkpoint_by_name(self, project_id: str, name: str) -> FineTuningCheckpointRecord | None:
        row = self.db.conn.execute(
            f"SELECT {', '.join('c.' + x.strip() for x in CKPT_COLS.split(','))} FROM fine_tuning_checkpoints c "
            "JOIN fine_tuning_jobs j ON j.id = c.job_id WHERE c.fine_tuned_model_checkpoint = ? AND j.project_id = ?",
            (name, project_id),
        ).fetchone()
        return _ckpt(row) if row else None

    @on_db_thread
    def referenced_artifacts(self) -> set[str]:
        rows = self.db.conn.execute(
            "SELECT artifact_key FROM fine_tuning_checkpoints UNION SELECT artifact_key FROM models").fetchall()
        return {r[0] for r in rows}
