"""MetadataStore on Postgres (psycopg 3, async pool): the SQLite store's semantics, for several machines.

Each call takes a pooled connection; a write is one transaction, and a write that depends on what it read locks
the rows it read (FOR UPDATE) where SQLite's BEGIN IMMEDIATE serialized every writer.
"""

from __future__ import annotations

from typing import Any

from psycopg import errors

from inhouse.ids import new_id, now
from inhouse.storage.base import Order
from inhouse.storage.postgres_base import Row, fetchone, rowcount
from inhouse.storage.postgres_batches import PostgresBatches, insert_file
from inhouse.storage.postgres_fine_tuning import PostgresFineTuning, insert_model
from inhouse.storage.postgres_usage import PostgresUsage
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
from inhouse.storage.tables import FILE_COLS
from inhouse.storage.tables import KEY_COLS as _KEY_COLS
from inhouse.storage.tables import MODEL_COLS as _MODEL_COLS
from inhouse.storage.tables import PROJECT_COLS as _PROJECT_COLS
from inhouse.storage.tables import UPLOAD_COLS as _UPLOAD_COLS

_LIVE = "(expires_at IS NULL OR expires_at > %s)"


def _api_key(row: Row) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8]), row[9])


class PostgresMetadataStore(PostgresFineTuning, PostgresUsage, PostgresBatches):
    # -- projects and keys ------------------------------------------------------------------------
    async def get_or_create_project(self, name: str) -> Project:
        async with self._write() as c:
            # ON CONFLICT: two processes creating the same project at once both end with the one row.
            await c.execute(f"INSERT INTO projects ({_PROJECT_COLS}) VALUES (%s, %s, %s, NULL, NULL) "
                            "ON CONFLICT (name) DO NOTHING", (new_id("proj"), name, now()))
            row = await fetchone(c, f"SELECT {_PROJECT_COLS} FROM projects WHERE name = %s", (name,))
        assert row is not None
        return Project(*row)

    async def get_project(self, project_id: str) -> Project | None:
        row = await self._one(f"SELECT {_PROJECT_COLS} FROM projects WHERE id = %s", (project_id,))
        return Project(*row) if row else None

    async def get_project_by_name(self, name: str) -> Project | None:
        row = await self._one(f"SELECT {_PROJECT_COLS} FROM projects WHERE name = %s", (name,))
        return Project(*row) if row else None

    async def update_project(self, project_id: str, *, name: str, rpm: int | None,
                             tpm: int | None) -> Project | None:
        try:
            async with self._write() as c:
                if await fetchone(c, "SELECT 1 FROM projects WHERE name = %s AND id <> %s", (name, project_id)):
                    return None
                row = await fetchone(c, f"UPDATE projects SET name = %s, rpm = %s, tpm = %s WHERE id = %s "
                                        f"RETURNING {_PROJECT_COLS}", (name, rpm, tpm, project_id))
        except errors.UniqueViolation:
            return None  # another transaction took the name between the test and the update
        return Project(*row) if row else None

    async def insert_api_key(self, key: ApiKey) -> None:
        async with self._write() as c:
            await c.execute(
                f"INSERT INTO api_keys ({_KEY_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (key.id, key.project_id, key.key_hash, key.name, key.created_at, key.revoked_at, key.rpm, key.tpm,
                 bool(key.admin), key.last_used_at),
            )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self._one(f"SELECT {_KEY_COLS} FROM api_keys WHERE id = %s", (key_id,))
        return _api_key(row) if row else None

    async def list_api_keys(self) -> list[tuple[ApiKey, Project]]:
        cols = ", ".join(f"k.{c.strip()}" for c in _KEY_COLS.split(","))
        project_cols = ", ".join(f"p.{c.strip()}" for c in _PROJECT_COLS.split(","))
        rows = await self._all(f"SELECT {cols}, {project_cols} FROM api_keys k JOIN projects p ON p.id = k.project_id "
                               "ORDER BY k.created_at")
        return [(_api_key(r[:10]), Project(*r[10:])) for r in rows]

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        async with self._write() as c:
            n = await rowcount(c, "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                               (at, key_id))
        return n == 1

    async def count_active_api_keys(self) -> int:
        row = await self._one("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        return int(row[0]) if row else 0

    async def list_projects(self, *, after: str | None, limit: int) -> Page[Project]:
        where, args = "", list[Any]()
        if after is not None:
            # (created_at, id) orders projects made in the same second; an unknown id matches no row.
            where = "WHERE (created_at, id) > (SELECT created_at, id FROM projects WHERE id = %s)"
            args.append(after)
        rows = await self._all(f"SELECT {_PROJECT_COLS} FROM projects {where} ORDER BY created_at, id LIMIT %s",
                               (*args, limit + 1))
        return Page([Project(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def list_project_api_keys(self, project_id: str, *, after: str | None, limit: int) -> Page[ApiKey]:
        where = "project_id = %s AND revoked_at IS NULL"
        args: list[Any] = [project_id]
        if after is not None:
            where += (" AND (created_at, id) > (SELECT created_at, id FROM api_keys WHERE id = %s "
                      "AND project_id = %s)")
            args += [after, project_id]
        rows = await self._all(f"SELECT {_KEY_COLS} FROM api_keys WHERE {where} ORDER BY created_at, id LIMIT %s",
                               (*args, limit + 1))
        return Page([_api_key(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def set_api_key_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> ApiKey | None:
        async with self._write() as c:
            row = await fetchone(c, f"UPDATE api_keys SET rpm = %s, tpm = %s WHERE id = %s AND revoked_at IS NULL "
                                    f"RETURNING {_KEY_COLS}", (rpm, tpm, key_id))
        return _api_key(row) if row else None

    # -- files ------------------------------------------------------------------------------------
    async def insert_file(self, file: FileRecord) -> None:
        async with self._write() as c:
            await insert_file(c, file)

    async def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None:
        row = await self._one(f"SELECT {FILE_COLS} FROM files WHERE id = %s AND project_id = %s AND {_LIVE}",
                              (file_id, project_id, now))
        return FileRecord(*row) if row else None

    async def list_files(
        self, project_id: str, *, purpose: str | None, after: str | None, limit: int, order: Order, now: int
    ) -> Page[FileRecord]:
        where = ["project_id = %s", _LIVE]
        args: list[Any] = [project_id, now]
        if purpose is not None:
            where.append("purpose = %s")
            args.append(purpose)
        if after is not None:
            # The cursor is an id; rows after it in this order. An unknown id (or another project's)
            # yields an empty page, never someone else's position.
            op = "<" if order == "desc" else ">"
            where.append(f"seq {op} (SELECT seq FROM files WHERE id = %s AND project_id = %s)")
            args += [after, project_id]
        direction = "DESC" if order == "desc" else "ASC"
        rows = await self._all(
            f"SELECT {FILE_COLS} FROM files WHERE {' AND '.join(where)} ORDER BY seq {direction} LIMIT %s",
            (*args, limit + 1),
        )
        return Page([FileRecord(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def delete_file(self, project_id: str, file_id: str) -> bool:
        async with self._write() as c:
            n = await rowcount(c, "DELETE FROM files WHERE id = %s AND project_id = %s", (file_id, project_id))
        return n == 1

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        rows = await self._all(
            f"SELECT {FILE_COLS} FROM files WHERE expires_at IS NOT NULL AND expires_at <= %s LIMIT %s", (now, limit))
        return [FileRecord(*r) for r in rows]

    async def delete_file_by_id(self, file_id: str) -> None:
        async with self._write() as c:
            await c.execute("DELETE FROM files WHERE id = %s", (file_id,))

    async def _existing(self, table: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            rows = await self._all(f"SELECT id FROM {table} WHERE id = ANY(%s::text[])", (ids[i : i + 500],))
            found.update(r[0] for r in rows)
        return found

    async def existing_file_ids(self, ids: list[str]) -> set[str]:
        return await self._existing("files", ids)

    # -- uploads ----------------------------------------------------------------------------------
    async def insert_upload(self, upload: UploadRecord) -> None:
        u = upload
        async with self._write() as c:
            await c.execute(
                f"INSERT INTO uploads ({_UPLOAD_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (u.id, u.project_id, u.filename, u.purpose, u.bytes, u.mime_type, u.status, u.created_at,
                 u.expires_at, u.file_expires_after, u.file_id),
            )

    async def get_upload(self, project_id: str, upload_id: str) -> UploadRecord | None:
        row = await self._one(f"SELECT {_UPLOAD_COLS} FROM uploads WHERE id = %s AND project_id = %s",
                              (upload_id, project_id))
        return UploadRecord(*row) if row else None

    async def insert_upload_part(self, project_id: str, part: UploadPartRecord) -> bool:
        p = part
        async with self._write() as c:
            # Only a pending upload of this project takes parts. FOR SHARE holds off a completion (which updates
            # the row) until this part is in, so a completed upload never gains a part.
            ok = await fetchone(
                c, "SELECT 1 FROM uploads WHERE id = %s AND project_id = %s AND status = 'pending' FOR SHARE",
                (p.upload_id, project_id))
            if not ok:
                return False
            await c.execute(
                "INSERT INTO upload_parts (id, upload_id, created_at, bytes, sha256) VALUES (%s, %s, %s, %s, %s)",
                (p.id, p.upload_id, p.created_at, p.bytes, p.sha256),
            )
        return True

    async def get_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        rows = await self._all(
            "SELECT id, upload_id, created_at, bytes, sha256 FROM upload_parts WHERE upload_id = %s ORDER BY seq",
            (upload_id,))
        return [UploadPartRecord(*r) for r in rows]

    async def set_upload_status(self, upload_id: str, *, expect: str, status: str) -> bool:
        async with self._write() as c:
            n = await rowcount(c, "UPDATE uploads SET status = %s WHERE id = %s AND status = %s",
                               (status, upload_id, expect))
        return n == 1

    async def complete_upload(self, upload_id: str, file: FileRecord) -> bool:
        async with self._write() as c:
            n = await rowcount(
                c, "UPDATE uploads SET status = 'completed', file_id = %s WHERE id = %s AND status = 'pending'",
                (file.id, upload_id))
            if n != 1:
                return False
            await insert_file(c, file)
        return True

    async def expired_uploads(self, now: int, limit: int) -> list[UploadRecord]:
        rows = await self._all(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE status = 'pending' AND expires_at <= %s LIMIT %s", (now, limit))
        return [UploadRecord(*r) for r in rows]

    async def delete_upload_parts(self, upload_id: str) -> None:
        async with self._write() as c:
            await c.execute("DELETE FROM upload_parts WHERE upload_id = %s", (upload_id,))

    async def existing_part_ids(self, ids: list[str]) -> set[str]:
        return await self._existing("upload_parts", ids)

    # -- models -----------------------------------------------------------------------------------
    async def insert_model(self, model: ModelRecord) -> None:
        async with self._write() as c:
            await insert_model(c, model)

    async def get_model(self, project_id: str, model_id: str) -> ModelRecord | None:
        row = await self._one(f"SELECT {_MODEL_COLS} FROM models WHERE id = %s AND project_id = %s",
                              (model_id, project_id))
        return ModelRecord(*row) if row else None

    async def list_models(self, project_id: str) -> list[ModelRecord]:
        rows = await self._all(f"SELECT {_MODEL_COLS} FROM models WHERE project_id = %s ORDER BY created, id",
                               (project_id,))
        return [ModelRecord(*r) for r in rows]

    async def delete_model(self, project_id: str, model_id: str) -> bool:
        async with self._write() as c:
            n = await rowcount(c, "DELETE FROM models WHERE id = %s AND project_id = %s", (model_id, project_id))
        return n == 1

    # -- idempotency ------------------------------------------------------------------------------
    async def begin_idempotent(
        self, record: IdempotencyRecord, lease_owner: str, lease_until: int
    ) -> IdempotencyRecord | None:
        r = record
        async with self._write() as c:
            # Insert-or-nothing first: of two requests racing for a new key exactly one inserts (the other waits
            # for its commit, then finds the row below, locked).
            inserted = await rowcount(
                c, "INSERT INTO idempotency (scope, key, request_hash, created_at, lease_owner, lease_expires_at) "
                   "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (scope, key) DO NOTHING",
                (r.scope, r.key, r.request_hash, r.created_at, lease_owner, lease_until))
            if inserted == 1:
                return None
            row = await fetchone(
                c, "SELECT scope, key, request_hash, created_at, status_code, content_type, body, lease_expires_at "
                   "FROM idempotency WHERE scope = %s AND key = %s FOR UPDATE", (r.scope, r.key))
            if row is None:  # deleted (aborted or purged) between the two statements: claim it afresh
                await c.execute(
                    "INSERT INTO idempotency (scope, key, request_hash, created_at, lease_owner, lease_expires_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (r.scope, r.key, r.request_hash, r.created_at, lease_owner, lease_until))
                return None
            existing = IdempotencyRecord(row[0], row[1], row[2], row[3], row[4], row[5],
                                         None if row[6] is None else bytes(row[6]))
            lease = row[7]
            if existing.status_code is not None or (lease is not None and lease >= r.created_at):
                return existing
            # In flight under an expired lease: its process died; this request takes the key over.
            await c.execute(
                "UPDATE idempotency SET request_hash = %s, created_at = %s, lease_owner = %s, lease_expires_at = %s "
                "WHERE scope = %s AND key = %s",
                (r.request_hash, r.created_at, lease_owner, lease_until, r.scope, r.key),
            )
        return None

    async def renew_idempotent(self, lease_owner: str, lease_until: int) -> int:
        async with self._write() as c:
            return await rowcount(
                c, "UPDATE idempotency SET lease_expires_at = %s WHERE lease_owner = %s AND status_code IS NULL",
                (lease_until, lease_owner))

    async def finish_idempotent(
        self, scope: str, key: str, request_hash: str, status_code: int, content_type: str, body: bytes
    ) -> None:
        async with self._write() as c:
            await c.execute(
                "UPDATE idempotency SET request_hash = %s, status_code = %s, content_type = %s, body = %s "
                "WHERE scope = %s AND key = %s",
                (request_hash, status_code, content_type, bytes(body), scope, key),
            )

    async def abort_idempotent(self, scope: str, key: str) -> None:
        async with self._write() as c:
            await c.execute("DELETE FROM idempotency WHERE scope = %s AND key = %s AND status_code IS NULL",
                            (scope, key))

    async def purge_idempotent(self, before: int) -> int:
        async with self._write() as c:
            return await rowcount(c, "DELETE FROM idempotency WHERE created_at < %s", (before,))

