"""Uploads and their parts on SQLite; completing an upload inserts its file in the same transaction."""

from __future__ import annotations

from inhouse.records import FileRecord, UploadPartRecord, UploadRecord
from inhouse.storage.sqlite.database import SqliteDatabase, existing_ids, on_db_thread
from inhouse.storage.sqlite.files import insert_file_row
from inhouse.storage.tables import UPLOAD_COLS


class SqliteUploads:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @on_db_thread
    def insert_upload(self, upload: UploadRecord) -> None:
        u = upload
        with self.db.write() as c:
            c.execute(
                f"INSERT INTO uploads ({UPLOAD_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (u.id, u.project_id, u.filename, u.purpose, u.bytes, u.mime_type, u.status, u.created_at,
                 u.expires_at, u.file_expires_after, u.file_id),
            )

    @on_db_thread
    def get_upload(self, project_id: str, upload_id: str) -> UploadRecord | None:
        row = self.db.conn.execute(
            f"SELECT {UPLOAD_COLS} FROM uploads WHERE id = ? AND project_id = ?", (upload_id, project_id)
        ).fetchone()
        return UploadRecord(*row) if row else None

    @on_db_thread
    def insert_upload_part(self, project_id: str, part: UploadPartRecord) -> bool:
        p = part
        with self.db.write() as c:
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

    @on_db_thread
    def get_upload_parts(self, upload_id: str) -> list[UploadPartRecord]:
        rows = self.db.conn.execute(
            "SELECT id, upload_id, created_at, bytes, sha256 FROM upload_parts WHERE upload_id = ? ORDER BY seq",
            (upload_id,),
        ).fetchall()
        return [UploadPartRecord(*r) for r in rows]

    @on_db_thread
    def set_upload_status(self, upload_id: str, *, expect: str, status: str) -> bool:
        with self.db.write() as c:
            cur = c.execute("UPDATE uploads SET status = ? WHERE id = ? AND status = ?", (status, upload_id, expect))
        return cur.rowcount == 1

    @on_db_thread
    def complete_upload(self, upload_id: str, file: FileRecord) -> bool:
        with self.db.write() as c:
            cur = c.execute(
                "UPDATE uploads SET status = 'completed', file_id = ? WHERE id = ? AND status = 'pending'",
                (file.id, upload_id),
            )
            if cur.rowcount != 1:
                return False
            insert_file_row(c, file)
        return True

    @on_db_thread
    def expired_uploads(self, now: int, limit: int) -> list[UploadRecord]:
        rows = self.db.conn.execute(
            f"SELECT {UPLOAD_COLS} FROM uploads WHERE status = 'pending' AND expires_at <= ? LIMIT ?", (now, limit)
        ).fetchall()
        return [UploadRecord(*r) for r in rows]

    @on_db_thread
    def delete_upload_parts(self, upload_id: str) -> None:
        with self.db.write() as c:
            c.execute("DELETE FROM upload_parts WHERE upload_id = ?", (upload_id,))

    @on_db_thread
    def existing_part_ids(self, ids: list[str]) -> set[str]:
        return existing_ids(self.db.conn, "upload_parts", ids)
