"""The README's first request works against a real `inhouse serve`, as a newcomer would run it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


@pytest.mark.slow
def test_readme_embedding_fine_tune_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The section an SDK user follows: upload pairs, fine-tune text-embedding-3-small, embed with the result."""
    text = README.read_text()
    first = re.search(r"## First request\n\n```python\n(.*?)```", text, re.S)
    section = re.search(r"## Fine-tune the embedding model\n.*?```python\n(.*?)```", text, re.S)
    assert first is not None and section is not None
    client_lines = "\n".join(first.group(1).split("\n\n")[:2])  # the import and the client
    server = ServeProcess(tmp_path / "data").start()
    try:
        code = (client_lines + "\n" + section.group(1)).replace("http://127.0.0.1:8000/v1", server.base_url)
        scope: dict[str, object] = {"__name__": "readme"}
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        server.stop()
    job: Any = scope["job"]
    assert job.status == "succeeded"
    name, base, tuned = capsys.readouterr().out.split()[-3:]
    assert name.startswith("ft:text-embedding-3-small:") and name.endswith(":shop:" + job.id[-8:])
    assert float(tuned) >= float(base) + 0.5, (base, tuned)
