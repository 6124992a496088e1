"""Uploads and their parts on Postgres; completing an upload inserts its file in the same transaction."""

from __future__ import annotations

from inhouse.records import FileRecord, UploadPartRecord, UploadRecord
from inhouse.storage.postgres.database import PostgresDatabase, fetchone, rowcount
from inhouse.storage.postgres.files import insert_file_row
from inhouse.storage.tables import UPLOAD_COLS


class PostgresUploads:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def insert_upload(self, upload: UploadRecord) -> None:
        u = upload
        async with self.db.write() as c:
            await c.execute(
                f"INSERT INTO uploads ({UPLOAD_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (u.id, u.project_id, u.filename, u.purpose, u.bytes, u.mime_type, u.status, u.created_at,
                 u.expires_at, u.file_expires_after, u.file_id),
            )

    async def get_upload(self, project_id: str, upload_id: str) -> UploadRecord | None:
        row = await self.db.one(f"SELECT {UPLOAD_COLS} FROM uploads WHERE id = %s AND project_id = %s",
                                (upload_id, project_id))
        return UploadRecord(*row) if row else None

    async def insert_upload_part(self, project_id: str, part: UploadPartRecord) -> bool:
        p = part
        async with self.db.write() as c:
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
        rows = await self.db.rows(
            "SELECT id, upload_id, created_at, bytes, sha256 FROM upload_parts WHERE upload_id = %s ORDER BY seq",
            (upload_id,))
        return [UploadPartRecord(*r) for r in rows]

    async def set_upload_status(self, upload_id: str, *, expect: str, status: str) -> bool:
        async with self.db.write() as c:
            n = await rowcount(c, "UPDATE uploads SET status = %s WHERE id = %s AND status = %s",
                               (status, upload_id, expect))
        return n == 1

    async def complete_upload(self, upload_id: str, file: FileRecord) -> bool:
        async with self.db.write() as c:
            n = await rowcount(
                c, "UPDATE uploads SET status = 'completed', file_id = %s WHERE id = %s AND status = 'pending'",
                (file.id, upload_id))
            if n != 1:
                return False
            await insert_file_row(c, file)
        return True

    async def expired_uploads(self, now: int, limit: int) -> list[UploadRecord]:
        rows = await self.db.rows(
            f"SELECT {UPLOAD_COLS} FROM uploads WHERE status = 'pending' AND expires_at <= %s LIMIT %s", (now, limit))
        return [UploadRecord(*r) for r in rows]

    async def delete_upload_parts(self, upload_id: str) -> None:
        async with self.db.write() as c:
            await c.execute("DELETE FROM upload_parts WHERE upload_id = %s", (upload_id,))

    async def existing_part_ids(self, ids: list[str]) -> set[str]:
        return await self.db.existing_ids("upload_parts", ids)
