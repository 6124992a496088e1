"""Projects and API keys on Postgres."""

from __future__ import annotations

from typing import Any

from inhouse.ids import new_id, now
from inhouse.records import ApiKey, Page, Project
from inhouse.storage.errors import Conflict
from inhouse.storage.postgres.database import PostgresDatabase, Row, fetchone, rowcount
from inhouse.storage.tables import KEY_COLS, PROJECT_COLS


def _api_key(row: Row) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8]), row[9])


class PostgresKeys:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def get_or_create_project(self, name: str) -> Project:
        async with self.db.write() as c:
            # ON CONFLICT: two processes creating the same project at once both end with the one row.
            await c.execute(f"INSERT INTO projects ({PROJECT_COLS}) VALUES (%s, %s, %s, NULL, NULL) "
                            "ON CONFLICT (name) DO NOTHING", (new_id("proj"), name, now()))
            row = await fetchone(c, f"SELECT {PROJECT_COLS} FROM projects WHERE name = %s", (name,))
        assert row is not None
        return Project(*row)

    async def get_project(self, project_id: str) -> Project | None:
        row = await self.db.one(f"SELECT {PROJECT_COLS} FROM projects WHERE id = %s", (project_id,))
        return Project(*row) if row else None

    async def get_project_by_name(self, name: str) -> Project | None:
        row = await self.db.one(f"SELECT {PROJECT_COLS} FROM projects WHERE name = %s", (name,))
        return Project(*row) if row else None

    async def update_project(self, project_id: str, *, name: str, rpm: int | None,
                             tpm: int | None) -> Project | None:
        try:
            async with self.db.write() as c:
                if await fetchone(c, "SELECT 1 FROM projects WHERE name = %s AND id <> %s", (name, project_id)):
                    return None
                row = await fetchone(c, f"UPDATE projects SET name = %s, rpm = %s, tpm = %s WHERE id = %s "
                                        f"RETURNING {PROJECT_COLS}", (name, rpm, tpm, project_id))
        except Conflict:
            return None  # another transaction took the name between the test and the update
        return Project(*row) if row else None

    async def list_projects(self, *, after: str | None, limit: int) -> Page[Project]:
        where, args = "", list[Any]()
        if after is not None:
            # (created_at, id) orders projects made in the same second; an unknown id matches no row.
            where = "WHERE (created_at, id) > (SELECT created_at, id FROM projects WHERE id = %s)"
            args.append(after)
        rows = await self.db.rows(f"SELECT {PROJECT_COLS} FROM projects {where} ORDER BY created_at, id LIMIT %s",
                                  (*args, limit + 1))
        return Page([Project(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def insert_api_key(self, key: ApiKey) -> None:
        async with self.db.write() as c:
            await c.execute(
                f"INSERT INTO api_keys ({KEY_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (key.id, key.project_id, key.key_hash, key.name, key.created_at, key.revoked_at, key.rpm, key.tpm,
                 bool(key.admin), key.last_used_at),
            )

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        row = await self.db.one(f"SELECT {KEY_COLS} FROM api_keys WHERE id = %s", (key_id,))
        return _api_key(row) if row else None

    async def list_api_keys(self) -> list[tuple[ApiKey, Project]]:
        cols = ", ".join(f"k.{c.strip()}" for c in KEY_COLS.split(","))
        project_cols = ", ".join(f"p.{c.strip()}" for c in PROJECT_COLS.split(","))
        rows = await self.db.rows(f"SELECT {cols}, {project_cols} FROM api_keys k JOIN projects p "
                                  "ON p.id = k.project_id ORDER BY k.created_at")
        return [(_api_key(r[:10]), Project(*r[10:])) for r in rows]

    async def list_project_api_keys(self, project_id: str, *, after: str | None, limit: int) -> Page[ApiKey]:
        where = "project_id = %s AND revoked_at IS NULL"
        args: list[Any] = [project_id]
        if after is not None:
            where += (" AND (created_at, id) > (SELECT created_at, id FROM api_keys WHERE id = %s "
                      "AND project_id = %s)")
            args += [after, project_id]
        rows = await self.db.rows(f"SELECT {KEY_COLS} FROM api_keys WHERE {where} ORDER BY created_at, id LIMIT %s",
                                  (*args, limit + 1))
        return Page([_api_key(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def set_api_key_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> ApiKey | None:
        async with self.db.write() as c:
            row = await fetchone(c, f"UPDATE api_keys SET rpm = %s, tpm = %s WHERE id = %s AND revoked_at IS NULL "
                                    f"RETURNING {KEY_COLS}", (rpm, tpm, key_id))
        return _api_key(row) if row else None

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        async with self.db.write() as c:
            n = await rowcount(c, "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                               (at, key_id))
        return n == 1

    async def count_active_api_keys(self) -> int:
        row = await self.db.one("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        return int(row[0]) if row else 0
