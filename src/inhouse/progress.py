"""Progress bars for long work a person waits for at a terminal, and nothing when output is not a terminal."""

from __future__ import annotations

import os
import sys
from typing import Any, Protocol


class Progress(Protocol):
    def update(self, n: float = 1) -> Any: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> Any: ...
    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> Any: ...
    def close(self) -> Any: ...


class _Silent:
    def update(self, n: float = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        return None

    def close(self) -> None:
        return None


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(total: float | None, desc: str, unit: str = "it", unit_scale: bool = False) -> Progress:
    """A bar on stderr when it is a terminal (tqdm), else one that draws nothing."""
    if not on_terminal():
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Silent()
    bar: Progress = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr,
                         dynamic_ncols=True)
    return bar


def quiet_libraries_off_terminal() -> None:
    """Libraries' own bars (Hugging Face's "Loading weights") print into logs when stderr is not a terminal:
    off there, before they are imported."""
    if not on_terminal():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
