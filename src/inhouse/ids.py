"""Identifiers in OpenAI's formats and the clock."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits

# OpenAI's separators differ per object: `file-…`, `upload_…`, `part_…`, `ftjob-…`, `ftckpt_…`.
_SEPARATOR = {"file": "-", "ftjob": "-", "ftevent": "-", "chatcmpl": "-", "cmpl": "-"}


_UNBIASED = 256 - 256 % len(_ALPHABET)  # bytes below this map onto the alphabet evenly (248 = 4 x 62)


def random_tokens(count: int, n: int = 24) -> list[str]:
    """`count` tokens of n characters of [A-Za-z0-9], each character uniform and unpredictable, from one
    urandom read: a batch's output names thousands of lines, and a read per character cost more than the rest
    of their writing."""
    chars: list[str] = []
    while len(chars) < count * n:
        need = count * n - len(chars)
        chars += [_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(need + need // 8 + 8) if b < _UNBIASED]
    text = "".join(chars[: count * n])
    return [text[i : i + n] for i in range(0, count * n, n)]


def random_token(n: int = 24) -> str:
    return random_tokens(1, n)[0]


def new_ids(prefix: str, count: int, n: int = 24) -> list[str]:
    return [f"{prefix}{_SEPARATOR.get(prefix, '_')}{token}" for token in random_tokens(count, n)]


def new_id(prefix: str, n: int = 24) -> str:
    return f"{prefix}{_SEPARATOR.get(prefix, '_')}{random_token(n)}"


def now() -> int:
    """Unix seconds, as every OpenAI timestamp."""
    return int(time.time())
