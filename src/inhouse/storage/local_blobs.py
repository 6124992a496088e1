"""BlobStore on a local directory: temp file on the same filesystem → fsync → rename → fsync dir.

A temp file belongs to its writer for the writer's whole life: the writer holds an exclusive flock on it
from creation until it is renamed or removed, and the sweeper removes only temps it can lock itself. The
kernel drops the lock when the writer's process dies, so a crash leaves a temp the sweeper can take, while a
live writer keeps its temp however long its client pauses, in this process or any other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inhouse import observability

_KEY = re.compile(r"^[a-z]+(/[A-Za-z0-9_-]+)+$")
_BUFFER = 1024 * 1024  # batch small network chunks into fewer, larger writes off the event loop
_IOV_MAX = 1024
_DEPTH = 4


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobWriter:
    """Buffers network-sized chunks into batches that a thread of this writer hashes and writes in order,
    up to _DEPTH batches in flight, so receiving overlaps with hashing and writing; memory stays bounded
    by _DEPTH x _BUFFER."""

    def __init__(self, store: LocalBlobStore, key: str) -> None:
        self._store = store
        self._final = store.path_for(key)
        self._temp = store.root / "tmp" / f"{secrets.token_hex(16)}.part"
        self._fd: int | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._inflight: collections.deque[asyncio.Future[None]] = collections.deque()
        self._thread: ThreadPoolExecutor | None = None

    def _open_temp(self) -> int:
        if self._fd is None:
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                # Held until the temp is renamed or removed; the sweeper skips temps it cannot lock.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _write_sync(self, chunks: list[bytes]) -> None:
        fd = self._open_temp()
        for chunk in chunks:
            self._hash.update(chunk)
        # One writev per batch, no join copy; loop for short writes.
        views = [memoryview(c) for c in chunks]
        while views:
            written = os.writev(fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]

    async def _wait_inflight(self, keep: int = 0) -> None:
        while len(self._inflight) > keep:
            await self._inflight.popleft()

    async def _flush(self, wait: bool) -> None:
        if self._pending:
            chunks, self._pending, self._pending_size = self._pending, [], 0
            if self._thread is None:
                # One thread per writer keeps its batches in order; it lives only as long as the upload.
                self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blob-writer")
            self._inflight.append(asyncio.get_running_loop().run_in_executor(self._thread, self._write_sync, chunks))
        await self._wait_inflight(0 if wait else _DEPTH - 1)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= _BUFFER:
            await self._flush(wait=False)

    def _commit_sync(self) -> None:
        fd = self._open_temp()
        os.fsync(fd)
        self._final.parent.mkdir(parents=True, exist_ok=True)
        # Renamed while still open and locked, so the sweeper can never take the temp in between.
        os.replace(self._temp, self._final)
        os.close(fd)
        self._fd = None
        _fsync_dir(self._final.parent)

    async def commit(self) -> tuple[int, str]:
        """Make the bytes durable under the key; only then may a metadata row point at it."""
        try:
            await self._flush(wait=True)
            self._stop_thread()
            await asyncio.to_thread(self._commit_sync)
        except BaseException:
            await self.abort()
            raise
        observability.BLOB_WRITTEN_BYTES.inc(self._size)
        return self._size, self._hash.hexdigest()

    def _abort_sync(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._temp.unlink(missing_ok=True)

    async def abort(self) -> None:
        self._pending = []
        with contextlib.suppress(Exception):
            await self._wait_inflight()
        self._stop_thread()
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

    async def read(self, key: str, chunk_size: int = 1024 * 1024, *, offset: int = 0,
                   length: int | None = None) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        fh = await asyncio.to_thread(open, path, "rb")
        try:
            if offset:
                await asyncio.to_thread(fh.seek, offset)
            left = -1 if length is None else length  # -1: to the end
            while left:
                chunk = await asyncio.to_thread(fh.read, chunk_size if left < 0 else min(chunk_size, left))
                if not chunk:
                    break
                left -= len(chunk) if left > 0 else 0
                observability.BLOB_READ_BYTES.inc(len(chunk))
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
                if p.stat().st_mtime > cutoff:
                    continue  # also covers the instant between a writer creating its temp and locking it
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue  # committed or aborted meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer (of this process or another) holds it, however long it has paused
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()  # under our lock: no writer can own this temp any more
                    removed += 1
            finally:
                os.close(fd)
        return removed

    async def remove_temporaries(self, older_than_s: float) -> int:
        """Remove abandoned temporaries: older than this and held by no live writer."""
        return await asyncio.to_thread(self._remove_temporaries, older_than_s)
