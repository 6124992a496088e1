"""Projects and API keys on SQLite."""

from __future__ import annotations

from typing import Any

from inhouse.ids import new_id, now
from inhouse.records import ApiKey, Page, Project
from inhouse.storage.sqlite.database import SqliteDatabase, on_db_thread
from inhouse.storage.tables import KEY_COLS, PROJECT_COLS


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8]), row[9])


class SqliteKeys:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def get_or_create_project(self, name: str) -> Project:
        with self.db.write() as c:
            row = c.execute(f"SELECT {PROJECT_COLS} FROM projects WHERE name = ?", (name,)).fetchone()
            if row is None:
                row = (new_id("proj"), name, now(), None, None)
                c.execute(f"INSERT INTO projects ({PROJECT_COLS}) VALUES (?, ?, ?, ?, ?)", row)
        return Project(*row)

    @on_db_thread
    def get_project(self, project_id: str) -> Project | None:
        row = self.db.conn.execute(f"SELECT {PROJECT_COLS} FROM projects WHERE id = ?", (project_id,)).fetchone()
        return Project(*row) if row else None

    @on_db_thread
    def get_project_by_name(self, name: str) -> Project | None:
        row = self.db.conn.execute(f"SELECT {PROJECT_COLS} FROM projects WHERE name = ?", (name,)).fetchone()
        return Project(*row) if row else None

    @on_db_thread
    def update_project(self, project_id: str, *, name: str, rpm: int | None, tpm: int | None) -> Project | None:
        with self.db.write() as c:
            if c.execute("SELECT 1 FROM projects WHERE name = ? AND id != ?", (name, project_id)).fetchone():
                return None
            c.execute("UPDATE projects SET name = ?, rpm = ?, tpm = ? WHERE id = ?", (name, rpm, tpm, project_id))
            row = c.execute(f"SELECT {PROJECT_COLS} FROM projects WHERE id = ?", (project_id,)).fetchone()
        return Project(*row) if row else None

    @on_db_thread
    def list_projects(self, *, after: str | None, limit: int) -> Page[Project]:
        where, args = "", list[Any]()
        if after is not None:
            # (created_at, id) orders projects made in the same second; an unknown id matches no row.
            where = "WHERE (created_at, id) > (SELECT created_at, id FROM projects WHERE id = ?)"
            args.append(after)
        rows = self.db.conn.execute(
            f"SELECT {PROJECT_COLS} FROM projects {where} ORDER BY created_at, id LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([Project(*r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def insert_api_key(self, key: ApiKey) -> None:
        with self.db.write() as c:
            c.execute(
                f"INSERT INTO api_keys ({KEY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key.id, key.project_id, key.key_hash, key.name, key.created_at, key.revoked_at, key.rpm, key.tpm,
                 int(key.admin), key.last_used_at),
            )

    @on_db_thread
    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self.db.conn.execute(f"SELECT {KEY_COLS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        return _api_key(row) if row else None

    @on_db_thread
    def list_api_keys(self) -> list[tuple[ApiKey, Project]]:
        cols = ", ".join(f"k.{c.strip()}" for c in KEY_COLS.split(","))
        project_cols = ", ".join(f"p.{c.strip()}" for c in PROJECT_COLS.split(","))
        rows = self.db.conn.execute(
            f"SELECT {cols}, {project_cols} FROM api_keys k JOIN projects p ON p.id = k.project_id "
            "ORDER BY k.created_at"
        ).fetchall()
        return [(_api_key(r[:10]), Project(*r[10:])) for r in rows]

    @on_db_thread
    def list_project_api_keys(self, project_id: str, *, after: str | None, limit: int) -> Page[ApiKey]:
        where = "project_id = ? AND revoked_at IS NULL"
        args: list[Any] = [project_id]
        if after is not None:
            where += " AND (created_at, id) > (SELECT created_at, id FROM api_keys WHERE id = ? AND project_id = ?)"
            args += [after, project_id]
        rows = self.db.conn.execute(
            f"SELECT {KEY_COLS} FROM api_keys WHERE {where} ORDER BY created_at, id LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return Page([_api_key(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @on_db_thread
    def set_api_key_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> ApiKey | None:
        with self.db.write() as c:
            c.execute("UPDATE api_keys SET rpm = ?, tpm = ? WHERE id = ? AND revoked_at IS NULL", (rpm, tpm, key_id))
            row = c.execute(f"SELECT {KEY_COLS} FROM api_keys WHERE id = ? AND revoked_at IS NULL",
                            (key_id,)).fetchone()
        return _api_key(row) if row else None

    @on_db_thread
    def revoke_api_key(self, key_id: str, at: int) -> bool:
        with self.db.write() as c:
            cur = c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id))
        return cur.rowcount == 1

    @on_db_thread
    def count_active_api_keys(self) -> int:
        return int(self.db.conn.execute("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0])
