"""The README's first request works against a real `inhouse serve`, as a newcomer would run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.serve import ServeProcess

pytestmark = pytest.mark.e2e
README = Path(__file__).parents[2] / "README.md"


def test_readme_snippet_runs(tmp_path: Path) -> None:
    text = README.read_text()
    assert "make serve" in text and "make test" in text
    snippet = re.search(r"## First request\n\n```python\n(.*?)```", text, re.S)
    assert snippet is not None
    server = ServeProcess(tmp_path / "data").start()
    try:
        code = snippet.group(1).replace("http://127.0.0.1:8000/v1", server.base_url)
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        server.stop()
