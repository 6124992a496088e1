"""A per-installation secret kept in a file of its own (the image-URL signing key): made once, atomically, 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """The secret in `path`, made first when there is none. A file that exists but is too short (a crash of an
    older version between create and write, an empty file someone made) stops the start: signing with it
    would make every URL guessable, and replacing it silently would break the URLs already handed out."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        _create(path)
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise RuntimeError(f"The secret file {path} holds {len(secret)} bytes, fewer than {SECRET_BYTES}: refusing "
                           "to use it. Delete it to make a new one (signed URLs already given out stop working).")
    return secret


def _create(path: Path) -> None:
    # Written whole to a temp file, fsynced, then linked in: the name never points at a partial secret, and
    # link (unlike rename) never replaces one another process made meanwhile — the first one wins for both.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(SECRET_BYTES))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links: rename, which is atomic too
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
