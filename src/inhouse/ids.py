"""Identifiers in OpenAI's formats and the clock."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits

# OpenAI's separators differ per object: `file-…`, `upload_…`, `part_…`, `ftjob-…`, `ftckpt_…`.
_SEPARATOR = {"file": "-", "ftjob": "-", "ftevent": "-", "chatcmpl": "-", "cmpl": "-"}


def random_token(n: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_id(prefix: str, n: int = 24) -> str:
    return f"{prefix}{_SEPARATOR.get(prefix, '_')}{random_token(n)}"


def now() -> int:
    """Unix seconds, as every OpenAI timestamp."""
    return int(time.time())
