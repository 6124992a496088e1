"""MetadataStore on SQLite: WAL, synchronous=FULL, foreign keys, busy timeout, BEGIN IMMEDIATE writes.

All statements run on one dedicated thread that owns the connection, so the event loop never blocks
and SQLite never sees the connection from two threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inhouse.ids import new_id, now
from inhouse.storage.base import Order
from inhouse.storage.records import (
    ApiKey,
    FileRecord,
    IdempotencyRecord,
    ModelRecord,
    Page,
    Project,
    UploadPartRecord,
    UploadRecord,
)
from inhouse.storage.sqlite_batches import SqliteBatches
from inhouse.storage.sqlite_fine_tuning import SqliteFineTuning
from inhouse.storage.sqlite_usage import SqliteUsage
from inhouse.storage.tables import FILE_COLS as _FILE_COLS
from inhouse.storage.tables import KEY_COLS as _KEY_COLS
from inhouse.storage.tables import PROJECT_COLS as _PROJECT_COLS
from inhouse.storage.tables import UPLOAD_COLS as _UPLOAD_COLS

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8]), row[9])


def sqlite_path(url: str) -> Path:
    """`sqlite:///rel/path.db` is relative, `sqlite:////abs/path.db` absolute (SQLAlchemy's convention)."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return Path(url.removeprefix("sqlite:///"))


class SqliteMetadataStore(SqliteFineTuning, SqliteUsage, SqliteBatches):
    # -- projects and keys ------------------------------------------------------------------------
    def _get_or_create_project(self, name: str) -> Project:
        with self._write() as c:
            row = c.execute(f"SELECT {_PROJECT_COLS} FROM projects WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = (new_id("proj"), name, now(), None, None)
                c.execute(f"INSERT INTO projects ({_PROJECT_COLS}) VALUES (?, ?, ?, ?, ?)", row)
        return Project(*row)

    async def get_or_create_project(self, name: str) -> Project:
        return await self._run(self._get_or_create_project, name)

    def _get_project(self, project_id: str) -> Project | None:
        row = self.conn.execute(f"SELECT {_PROJECT_COLS} FROM projects WHERE id = ?", (project_id,)).fetchone()
        return Project(*row) if row else None

    async def get_project(self, project_id: str) -> Project | None:
        return await self._run(self._get_project, project_id)

    def _get_project_by_name(self, name: str) -> Project | None:
        row = self.conn.execute(f"SELECT {_PROJECT_COLS} FROM projects WHERE name = ?", (name,)).fetchone()
        return Project(*row) if row else None

    async def get_project_by_name(self, name: str) -> Project | None:
        return await self._run(self._get_project_by_name, name)

    def _update_project(self, project_id: str, name: str, rpm: int | None, tpm: int | None) -> Project | None:
        with self._write() as c:
            if c.execute("SELECT 1 FROM projects WHERE name = ? AND id != ?", (name, project_id)).fetchone():
                return None
            c.execute("UPDATE projects SET name = ?, rpm = ?, tpm = ? WHERE id = ?", (name, rpm, tpm, project_id))
            row = c.execute(f"SELECT {_PROJECT_COLS} FROM projects WHERE id = ?", (project_id,)).fetchone()
        return Project(*row) if row else None

    async def update_project(self, project_id: str, *, name: str, rpm: int | None,
                             tpm: int | None) -> Project | None:
        return await self._run(self._update_project, project_id, name, rpm, tpm)

    def _insert_api_key(self, key: ApiKey) -> None:
        with self._write() as c:
            c.execute(
                f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.id, key.project_id, key.key_hash, key.name, key.created_at, key.revoked_at, key.rpm, key.tpm,
                 int(key.admin), key.last_used_at),
            )

    async def insert_api_key(self, key: ApiKey) -> None:
        await self._run(self._insert_api_key, key)

    def _get_api_key(self, key_id: str) -> ApiKey | None:
        row = self.conn.execute(f"SELECT {_KEY_COLS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _api_key(row) if row else None

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return await self._run(self._get_api_key, key_id)

    def _list_api_keys(self) -> list[tuple[ApiKey, Project]]:
        cols = ", ".join(f"k.{c.strip()}" for c in _KEY_COLS.split(","))
        project_cols = ", ".join(f"p.{c.strip()}" for c in _PROJECT_COLS.split(","))
        rows = self.conn.execute(
            f"SELECT {cols}, {project_cols} FROM api_keys k JOIN projects p ON p.id = k.project_id "
            "ORDER BY k.created_at"
        ).fetchall()
        return [(_api_key(r[:10]), Project(*r[10:])) for r in rows]

    async def list_api_keys(self) -> list[tuple[ApiKey, Project]]:
        return await self._run(self._list_api_keys)

    def _revoke_api_key(self, key_id: str, at: int) -> bool:
        with self._write() as c:
            cur = c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id))
        return cur.rowcount == 1

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        return await self._run(self._revoke_api_key, key_id, at)

    def _count_active_api_keys(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0])

    async def count_active_api_keys(self) -> int:
        return await self._run(self._count_active_api_keys)

    def _list_projects(self, after: str | None, limit: int) -> Page[Project]:
        where, args = "", list[Any]()
        if after is not None:
            # (created_at, id) orders projects made in the same second; an unknown id matches no row.
            where = "WHERE (created_at, id) > (SELECT created_at, id FROM projects WHERE id = ?)"
            args.append(after)
        rows = self.conn.execute(
            f"SELECT {_PROJECT_COLS} FROM projects {where} ORDER BY created_at, id LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([Project(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_projects(self, *, after: str | None, limit: int) -> Page[Project]:
        return await self._run(self._list_projects, after, limit)

    def _list_project_api_keys(self, project_id: str, after: str | None, limit: int) -> Page[ApiKey]:
        where = "project_id = ? AND revoked_at IS NULL"
        args: list[Any] = [project_id]
        if after is not None:
            where += " AND (created_at, id) > (SELECT created_at, id FROM api_keys WHERE id = ? AND project_id = ?)"
            args += [after, project_id]
        rows = self.conn.execute(
            f"SELECT {_KEY_COLS} FROM api_keys WHERE {where} ORDER BY created_at, id LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([_api_key(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_project_api_keys(self, project_id: str, *, after: str | None, limit: int) -> Page[ApiKey]:
        return await self._run(self._list_project_api_keys, project_id, after, limit)

    def _set_api_key_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> ApiKey | None:
        with self._write() as c:
            c.execute("UPDATE api_keys SET rpm = ?, tpm = ? WHERE id = ? AND revoked_at IS NULL", (rpm, tpm, key_id))
            row = c.execute(f"SELECT {_KEY_COLS} FROM api_keys WHERE id = ? AND revoked_at IS NULL",
                            (key_id,)).fetchone()
        return _api_key(row) if row else None

    async def set_api_key_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> ApiKey | None:
        return await self._run(self._set_api_key_limits, key_id, rpm, tpm)

    # -- files ------------------------------------------------------------------------------------
    def _insert_file(self, f: FileRecord) -> None:
        with self._write() as c:
            c.execute(
                f"INSERT INTO files ({_FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f.id, f.project_id, f.bytes, f.created_at, f.expires_at, f.filename, f.purpose, f.status,
                 f.status_details, f.sha256),
            )

    async def insert_file(self, file: FileRecord) -> None:
        await self._run(self._insert_file, file)

    def _get_file(self, project_id: str, file_id: str, at: int) -> FileRecord | None:
        row = self.conn.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE id = ? AND project_id = ? AND {_LIVE}",
            (file_id, project_id, at),
        ).fetchone()
        return FileRecord(*row) if row else None

    async def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None:
        return await self._run(self._get_file, project_id, file_id, now)

    def _list_files(
        self, project_id: str, purpose: str | None, after: str | None, limit: int, order: Order, at: int
    ) -> Page[FileRecord]:
        where = ["project_id = ?", _LIVE]
        args: list[Any] = [project_id, at]
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            # The cursor is an id; rows after it in this order. An unknown id (or another project's)
            # yields an empty page, never someone else's position.
            op = "<" if order == "desc" else ">"
            where.append(f"seq {op} (SELECT seq FROM files WHERE id = ? AND project_id = ?)")
            args += [after, project_id]
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.conn.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return Page([FileRecord(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_files(
        self, project_id: str, *, purpose: str | None, after: str | None, limit: int, order: Order, now: int
    ) -> Page[FileRecord]:
        return await self._run(self._list_files, project_id, purpose, after, limit, order, now)

    def _delete_file(self, project_id: str, file_id: str) -> bool:
        with self._write() as c:
            cur = c.execute("DELETE FROM files WHERE id = ? AND project_id = ?", (file_id, project_id))
        return cur.rowcount == 1

    async def delete_file(self, project_id: str, file_id: str) -> bool:
        return await self._run(self._delete_file, project_id, file_id)

    def _expired_files(self, at: int, limit: int) -> list[FileRecord]:
        rows = self.conn.execute(
            f"SELECT {_FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?", (at, limit)
        ).fetchall()
        return [FileRecord(*r) for r in rows]

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        return await self._run(self._expired_files, now, limit)

    def _delete_file_by_id(self, file_id: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM files WHERE id = ?", (file_id,))

    async def delete_file_by_id(self, file_id: str) -> None:
        await self._run(self._delete_file_by_id, file_id)

    def _existing(self, table: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk))
        return found

    async def existing_file_ids(self, ids: list[str]) -> set[str]:
        return await self._run(self._existing, "files", ids)

    # -- uploads ----------------------------------------------------------------------------------
    def _insert_upload(self, u: UploadRecord) -> None:
        with self._write() as c:
            c.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (u.id, u.project_id, u.filename, u.purpose, u.bytes, u.mime_type, u.status, u.created_at,
                 u.expires_at, u.file_expires_after, u.file_id),
            )

    async def insert_upload(self, upload: UploadRecord) -> None:
        await self._run(self._insert_upload, upload)

    def _get_upload(self, project_id: str, upload_id: str) -> UploadRecord | None:
        row = self.conn.execute(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE id = ? AND project_id = ?", (upload_id, project_id)
        ).fetchone()
        return UploadRecord(*row) if row else None

    async def get_upload(self, project_id: str, upload_id: str) -> UploadRecord | None:
        return await self._run(self._get_upload, project_id, upload_id)

    def _insert_upload_part(self, project_id: str, p: UploadPartRecord) -> bool:
        with self._write() as c:
            # Only a pending upload of this project takes parts; checked in the same transaction.
            ok = c.execute(
                "SELECT 1 FROM uploads WHERE id = ? AND project_id = ? AND status = 'pending'",
                (p.upload_id, project_id),
            ).fetchone()
            if not ok:
                return False
            c.execute(
                "INSERT INTO upload_parts (id, upload_id, created_at, bytes, sha256) VALUES (?, ?, ?, ?, ?)",
                (p.id, p.upload_id, p.created_at, p.bytes, p.sha256),
            )
        return True

    async def insert_upload_part(self, project_id: str, part: UploadPartRecord) -> bool:
        return await self._run(self._insert_upload_part, project_id, part)

    def _get_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        rows = self.conn.execute(
            "SELECT id, upload_id, created_at, bytes, sha256 FROM upload_parts WHERE upload_id = ? ORDER BY seq",
            (upload_id,),
        ).fetchall()
        return [UploadPartRecord(*r) for r in rows]

    async def get_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        return await self._run(self._get_upload_parts, upload_id)

    def _set_upload_status(self, upload_id: str, expect: str, status: str) -> bool:
        with self._write() as c:
            cur = c.execute(
                "UPDATE uploads SET status = ? WHERE id = ? AND status = ?", (status, upload_id, expect)
            )
        return cur.rowcount == 1

    async def set_upload_status(self, upload_id: str, *, expect: str, status: str) -> bool:
        return await self._run(self._set_upload_status, upload_id, expect, status)

    def _complete_upload(self, upload_id: str, f: FileRecord) -> bool:
        with self._write() as c:
            cur = c.execute(
                "UPDATE uploads SET status = 'completed', file_id = ? WHERE id = ? AND status = 'pending'",
                (f.id, upload_id),
            )
            if cur.rowcount != 1:
                return False
            c.execute(
                f"INSERT INTO files ({_FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f.id, f.project_id, f.bytes, f.created_at, f.expires_at, f.filename, f.purpose, f.status,
                 f.status_details, f.sha256),
            )
        return True

    async def complete_upload(self, upload_id: str, file: FileRecord) -> bool:
        return await self._run(self._complete_upload, upload_id, file)

    def _expired_uploads(self, at: int, limit: int) -> list[UploadRecord]:
        rows = self.conn.execute(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE status = 'pending' AND expires_at <= ? LIMIT ?", (at, limit)
        ).fetchall()
        return [UploadRecord(*r) for r in rows]

    async def expired_uploads(self, now: int, limit: int) -> list[UploadRecord]:
        return await self._run(self._expired_uploads, now, limit)

    def _delete_upload_parts(self, upload_id: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM upload_parts WHERE upload_id = ?", (upload_id,))

    async def delete_upload_parts(self, upload_id: str) -> None:
        await self._run(self._delete_upload_parts, upload_id)

    async def existing_part_ids(self, ids: list[str]) -> set[str]:
        return await self._run(self._existing, "upload_parts", ids)

    # -- models -----------------------------------------------------------------------------------
    def _insert_model(self, m: ModelRecord) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
                (m.id, m.project_id, m.created, m.owned_by, m.kind, m.base_model, m.artifact_key),
            )

    async def insert_model(self, model: ModelRecord) -> None:
        await self._run(self._insert_model, model)

    def _get_model(self, project_id: str, model_id: str) -> ModelRecord | None:
        row = self.conn.execute(
            "SELECT * FROM models WHERE id = ? AND project_id = ?", (model_id, project_id)
        ).fetchone()
        return ModelRecord(*row) if row else None

    async def get_model(self, project_id: str, model_id: str) -> ModelRecord | None:
        return await self._run(self._get_model, project_id, model_id)

    def _list_models(self, project_id: str) -> list[ModelRecord]:
        rows = self.conn.execute(
            "SELECT * FROM models WHERE project_id = ? ORDER BY created, id", (project_id,)
        ).fetchall()
        return [ModelRecord(*r) for r in rows]

    async def list_models(self, project_id: str) -> list[ModelRecord]:
        return await self._run(self._list_models, project_id)

    def _delete_model(self, project_id: str, model_id: str) -> bool:
        with self._write() as c:
            cur = c.execute("DELETE FROM models WHERE id = ? AND project_id = ?", (model_id, project_id))
        return cur.rowcount == 1

    async def delete_model(self, project_id: str, model_id: str) -> bool:
        return await self._run(self._delete_model, project_id, model_id)

    # -- idempotency ------------------------------------------------------------------------------
    def _begin_idempotent(self, r: IdempotencyRecord, owner: str, until: int) -> IdempotencyRecord | None:
        with self._write() as c:
            row = c.execute(
                "SELECT scope, key, request_hash, created_at, status_code, content_type, body, lease_expires_at "
                "FROM idempotency WHERE scope = ? AND key = ?", (r.scope, r.key)
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO idempotency (scope, key, request_hash, created_at, lease_owner, lease_expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (r.scope, r.key, r.request_hash, r.created_at, owner, until),
                )
                return None
            existing = IdempotencyRecord(*row[:7])
            lease = row[7]
            if existing.status_code is not None or (lease is not None and lease >= r.created_at):
                return existing
            # In flight under an expired lease: its process died; this request takes the key over.
            c.execute(
                "UPDATE idempotency SET request_hash = ?, created_at = ?, lease_owner = ?, lease_expires_at = ? "
                "WHERE scope = ? AND key = ?",
                (r.request_hash, r.created_at, owner, until, r.scope, r.key),
            )
        return None

    async def begin_idempotent(
        self, record: IdempotencyRecord, lease_owner: str, lease_until: int
    ) -> IdempotencyRecord | None:
        return await self._run(self._begin_idempotent, record, lease_owner, lease_until)

    def _renew_idempotent(self, owner: str, until: int) -> int:
        with self._write() as c:
            cur = c.execute(
                "UPDATE idempotency SET lease_expires_at = ? WHERE lease_owner = ? AND status_code IS NULL",
                (until, owner),
            )
        return cur.rowcount

    async def renew_idempotent(self, lease_owner: str, lease_until: int) -> int:
        return await self._run(self._renew_idempotent, lease_owner, lease_until)

    def _finish_idempotent(
        self, scope: str, key: str, request_hash: str, status: int, ctype: str, body: bytes
    ) -> None:
        with self._write() as c:
            c.execute(
                "UPDATE idempotency SET request_hash = ?, status_code = ?, content_type = ?, body = ? "
                "WHERE scope = ? AND key = ?",
                (request_hash, status, ctype, body, scope, key),
            )

    async def finish_idempotent(
        self, scope: str, key: str, request_hash: str, status_code: int, content_type: str, body: bytes
    ) -> None:
        await self._run(self._finish_idempotent, scope, key, request_hash, status_code, content_type, body)

    def _abort_idempotent(self, scope: str, key: str) -> None:
        with self._write() as c:
            c.execute("DELETE FROM idempotency WHERE scope = ? AND key = ? AND status_code IS NULL", (scope, key))

    async def abort_idempotent(self, scope: str, key: str) -> None:
        await self._run(self._abort_idempotent, scope, key)

    def _purge_idempotent(self, before: int) -> int:
        with self._write() as c:
            cur = c.execute("DELETE FROM idempotency WHERE created_at < ?", (before,))
        return cur.rowcount

    async def purge_idempotent(self, before: int) -> int:
        return await self._run(self._purge_idempotent, before)
