"""The README's first request works against a real `inhouse serve`, as a newcomer would run it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serve import ServeProcess

pytestmark = pytest.mark.e2e
README = Path(__file__).parents[2] / "README.md"


def run_section(title: str, tmp_path: Path) -> dict[str, object]:
    """The README section's Python, after the first request's import and client, against a real `inhouse serve`;
    the names it defined."""
    text = README.read_text()
    first = re.search(r"## First request\n\n```python\n(.*?)```", text, re.S)
    section = re.search(rf"## {re.escape(title)}\n.*?```python\n(.*?)```", text, re.S)
    assert first is not None and section is not None
    client_lines = "\n".join(first.group(1).split("\n\n")[:2])  # the import and the client
    server = ServeProcess(tmp_path / "data").start()
    try:
        code = (client_lines + "\n" + section.group(1)).replace("http://127.0.0.1:8000/v1", server.base_url)
        scope: dict[str, object] = {"__name__": "readme"}
        exec(compile(code, "README.md", "exec"), scope)
    finally:
        server.stop()
    return scope


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
    scope = run_section("Fine-tune the embedding model", tmp_path)
    job: Any = scope["job"]
    assert job.status == "succeeded"
    name, base, tuned = capsys.readouterr().out.split()[-3:]
    assert name.startswith("ft:text-embedding-3-small:") and name.endswith(":shop:" + job.id[-8:])
    assert float(tuned) >= float(base) + 0.5, (base, tuned)


def test_readme_batch_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Batches section as an SDK user follows it, against `inhouse serve` and its default embedding model."""
    scope = run_section("Batches", tmp_path)
    batch: Any = scope["batch"]
    assert batch.status == "completed"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 3, 1)
    out = capsys.readouterr().out
    assert "doc-0\ndoc-1\ndoc-3\n" in out and "'input' cannot be an empty string." in out
