"""BlobStore on a local directory: temp file on the same filesystem → fsync → rename → fsync dir."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

_KEY = re.compile(r"^[a-z]+(/[A-Za-z0-9_-]+)+$")
_BUFFER = 1024 * 1024  # batch small network chunks into fewer, larger writes off the event loop


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore, key: str) -> None:
        self._store = store
        self._final = store.path_for(key)
        self._temp = store.root / "tmp" / f"{secrets.token_hex(16)}.part"
        self._fh: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0

    def _open(self) -> None:
        self._fh = open(self._temp, "xb", buffering=0)  # noqa: SIM115 - closed in commit/abort

    def _write_sync(self, data: bytes) -> None:
        if self._fh is None:
            self._open()
        assert self._fh is not None
        self._hash.update(data)
        view = memoryview(data)
        while view:
            written = self._fh.write(view)
            view = view[written or 0 :]

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_size = [], 0
        await asyncio.to_thread(self._write_sync, data)

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= _BUFFER:
            await self._flush()

    def _commit_sync(self) -> None:
        if self._fh is None:
            self._open()
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, self._final)
        _fsync_dir(self._final.parent)

    async def commit(self) -> tuple[int, str]:
        """Make the bytes durable under the key; only then may a metadata row point at it."""
        try:
            await self._flush()
            await asyncio.to_thread(self._commit_sync)
        except BaseException:
            await self.abort()
            raise
        return self._size, self._hash.hexdigest()

    def _abort_sync(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self._temp.unlink(missing_ok=True)

    async def abort(self) -> None:
        self._pending = []
        await asyncio.to_thread(self._abort_sync)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        # Keys are built by services from our own ids; the check makes a slip fail loudly, not escape.
        if not _KEY.match(key) or ".." in key:
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    async def open(self) -> None:
        await asyncio.to_thread((self.root / "tmp").mkdir, parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def writer(self, key: str) -> LocalBlobWriter:
        self.path_for(key)
        return LocalBlobWriter(self, key)

    async def read(self, key: str, chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        fh = await asyncio.to_thread(open, path, "rb")
        try:
            while True:
                chunk = await asyncio.to_thread(fh.read, chunk_size)
                if not chunk:
                    break
                yield chunk
        finally:
            fh.close()

    async def size(self, key: str) -> int | None:
        path = self.path_for(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            return None

    async def age_seconds(self, key: str) -> float | None:
        path = self.path_for(key)
        try:
            return time.time() - (await asyncio.to_thread(path.stat)).st_mtime
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path_for(key).unlink, missing_ok=True)

    def _list_keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return [f"{prefix}/{p.name}" for p in base.iterdir() if p.is_file()]

    async def list_keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list_keys, prefix)

    def _remove_temporaries(self, older_than_s: float) -> int:
        removed = 0
        cutoff = time.time() - older_than_s
        for p in (self.root / "tmp").glob("*.part"):
            try:
                if p.stat().st_mtime <= cutoff:
                    p.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    async def remove_temporaries(self, older_than_s: float) -> int:
        """Remove abandoned temporaries: a live writer touches its file far more often than this."""
        return await asyncio.to_thread(self._remove_temporaries, older_than_s)
