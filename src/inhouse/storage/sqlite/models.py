"""Fine-tuned models' rows on SQLite."""

from __future__ import annotations

import sqlite3

from inhouse.records import ModelRecord
from inhouse.storage.sqlite.database import SqliteDatabase, on_db_thread
from inhouse.storage.tables import MODEL_COLS


def insert_model_row(c: sqlite3.Connection, m: ModelRecord) -> None:
    """The INSERT of a model's row, inside the caller's write transaction (a job's success makes one too)."""
    c.execute(f"INSERT INTO models ({MODEL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
              (m.id, m.project_id, m.created, m.owned_by, m.kind, m.base_model, m.artifact_key))


class SqliteModels:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def insert_model(self, model: ModelRecord) -> None:
        with self.db.write() as c:
            insert_model_row(c, model)

    @on_db_thread
    def get_model(self, project_id: str, model_id: str) -> ModelRecord | None:
        row = self.db.conn.execute(
            f"SELECT {MODEL_COLS} FROM models WHERE id = ? AND project_id = ?", (model_id, project_id)
        ).fetchone()
        return ModelRecord(*row) if row else None

    @on_db_thread
    def list_models(self, project_id: str) -> list[ModelRecord]:
        rows = self.db.conn.execute(
            f"SELECT {MODEL_COLS} FROM models WHERE project_id = ? ORDER BY created, id", (project_id,)
        ).fetchall()
        return [ModelRecord(*r) for r in rows]

    @on_db_thread
    def delete_model(self, project_id: str, model_id: str) -> bool:
        with self.db.write() as c:
            cur = c.execute("DELETE FROM models WHERE id = ? AND project_id = ?", (model_id, project_id))
        return cur.rowcount == 1
