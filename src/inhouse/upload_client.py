"""`inhouse files upload`: send a local file to a running server through its public API, in one request or,
when large, through the Uploads API in parts, with a progress bar."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import sys
from pathlib import Path
from typing import IO, Any, cast

from inhouse.progress import Progress, progress

MB = 1024 * 1024
SINGLE_REQUEST_MAX = 32 * MB  # above this, the Uploads API: parts can be retried and no request is huge
PART_BYTES = 64 * MB  # the server's default `limits.max_upload_part_bytes`


class UploadFailed(Exception):
    """The server refused a request; the message is its error's."""


class _Counted:
    """A file-like reader that moves the progress bar as the HTTP client reads it."""

    def __init__(self, inner: IO[bytes], bar: Progress, limit: int | None = None) -> None:
        self.inner, self.bar, self.left = inner, bar, limit

    def read(self, n: int = -1) -> bytes:
        if self.left is not None:
            n = self.left if n < 0 else min(n, self.left)
        data = self.inner.read(n)
        if self.left is not None:
            self.left -= len(data)
        self.bar.update(len(data))
        return data


def _check(response: Any) -> dict[str, Any]:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 400:
        error = body.get("error") or {}
        raise UploadFailed(f"{response.status_code}: {error.get('message') or response.text[:300]}")
    return body


def upload(path: Path, purpose: str, base_url: str, api_key: str, *, part_bytes: int = PART_BYTES,
           single_max: int = SINGLE_REQUEST_MAX, timeout: float = 600.0) -> dict[str, Any]:
    """Upload `path`; returns the File object the server answered."""
    import httpx

    size = path.stat().st_size
    base = base_url.rstrip("/")
    bar = progress(size, path.name, unit="B", unit_scale=True)
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout) as http:
            if size <= single_max:
                with path.open("rb") as f:
                    return _check(http.post(f"{base}/files", data={"purpose": purpose},
                                            files={"file": (path.name, cast(IO[bytes], _Counted(f, bar)))}))
            mime = mimetypes.guess_type(path.name)[0] or ("application/jsonl" if path.suffix == ".jsonl"
                                                          else "application/octet-stream")
            created = _check(http.post(f"{base}/uploads", json={
                "filename": path.name, "purpose": purpose, "bytes": size, "mime_type": mime}))
            try:
                part_ids = []
                with path.open("rb") as f:
                    for offset in range(0, size, part_bytes):
                        length = min(part_bytes, size - offset)
                        part = _check(http.post(f"{base}/uploads/{created['id']}/parts",
                                                files={"data": ("part", cast(IO[bytes], _Counted(f, bar, length)))}))
                        part_ids.append(part["id"])
                done = _check(http.post(f"{base}/uploads/{created['id']}/complete", json={"part_ids": part_ids}))
            except BaseException:
                with contextlib.suppress(httpx.HTTPError):  # leave nothing half-made behind on the server
                    http.post(f"{base}/uploads/{created['id']}/cancel")
                raise
            file: dict[str, Any] = done["file"]
            print(f"{path.name}: through the Uploads API in {len(part_ids)} parts ({created['id']})",
                  file=sys.stderr)
            return file
    finally:
        bar.close()


def default_base_url() -> str:
    return os.environ.get("OPENAI_BASE_URL") or "http://127.0.0.1:8000/v1"


def default_api_key() -> str:
    # Open mode on loopback needs none; the SDK's variable is the one people already set.
    return os.environ.get("INHOUSE_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
