"""Client filenames are metadata only: make them safe to store and to echo in a header."""

from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_FILENAME_BYTES = 255


def sanitize_filename(raw: str | None, default: str = "upload") -> str:
    """Keep the last path component, drop control characters (NUL, CR, LF...), cap the length."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[\\/]", name)[-1]
    name = _CONTROL.sub("", name).strip()
    if name in {"", ".", ".."}:
        return default
    while len(name.encode()) > MAX_FILENAME_BYTES:
        name = name[:-1]
    return name
