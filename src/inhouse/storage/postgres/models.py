"""Fine-tuned models' rows on Postgres."""

from __future__ import annotations

from inhouse.records import ModelRecord
from inhouse.storage.postgres.database import Conn, PostgresDatabase, rowcount
from inhouse.storage.tables import MODEL_COLS


async def insert_model_row(c: Conn, m: ModelRecord) -> None:
    """The INSERT of a model's row, inside the caller's transaction (a job's success makes one too)."""
    await c.execute(f"INSERT INTO models ({MODEL_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (m.id, m.project_id, m.created, m.owned_by, m.kind, m.base_model, m.artifact_key))


class PostgresModels:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def insert_model(self, model: ModelRecord) -> None:
        async with self.db.write() as c:
            await insert_model_row(c, model)

    async def get_model(self, project_id: str, model_id: str) -> ModelRecord | None:
        row = await self.db.one(f"SELECT {MODEL_COLS} FROM models WHERE id = %s AND project_id = %s",
                                (model_id, project_id))
        return ModelRecord(*row) if row else None

    async def list_models(self, project_id: str) -> list[ModelRecord]:
        rows = await self.db.rows(f"SELECT {MODEL_COLS} FROM models WHERE project_id = %s ORDER BY created, id",
                                  (project_id,))
        return [ModelRecord(*r) for r in rows]

    async def delete_model(self, project_id: str, model_id: str) -> bool:
        async with self.db.write() as c:
            n = await rowcount(c, "DELETE FROM models WHERE id = %s AND project_id = %s", (model_id, project_id))
        return n == 1
