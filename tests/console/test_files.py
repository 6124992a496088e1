"""Files in the console: drag-and-drop upload with progress (a large file through the Uploads API in parts), the
paged list with its purpose filter, a preview of a JSONL file's first lines, download and delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_client
from tests.console.conftest import create_key, open_console, shoot
from tests.harness import ServerHandle
from tests.llm import chat_line

expect = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright").expect

DROP = """([files, bigMiB]) => {
  const dt = new DataTransfer();
  for (const [name, text, type] of files) dt.items.add(new File([text], name, {type}));
  if (bigMiB) {  // a large text file, built from 1 MiB pieces
    const piece = 'x'.repeat(1023) + '\\n';
    const mib = new Blob([piece.repeat(1024)]);
    dt.items.add(new File(Array(bigMiB).fill(mib), 'big.txt', {type: 'text/plain'}));
  }
  return dt;
}"""


def drop(page: Any, files: list[tuple[str, str, str]], big_mib: int = 0) -> None:
    """A real drop: the DataTransfer the browser hands the page, through dragenter, dragover and drop events."""
    data = page.evaluate_handle(DROP, [files, big_mib])
    zone = page.locator("#dropzone")
    for event in ("dragenter", "dragover", "drop"):
        zone.dispatch_event(event, {"dataTransfer": data})


def test_upload_by_drag_and_drop_then_list_preview_download_delete(page: Any, console_server: ServerHandle,
                                                                   tmp_path: Path) -> None:
    key = create_key(console_server)
    client = make_client(console_server.base_url, api_key=key)
    open_console(page, console_server, key, "/files")
    page.get_by_role("heading", name="Files", exact=True).wait_for()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url.split('/v1', 1)[-1]}"))

    lines = [chat_line(f"ping {i}", "pong pong pong") for i in range(40)]
    drop(page, [("train.jsonl", "\n".join(lines) + "\n", "")])
    page.get_by_text("Done: file-").wait_for()
    row = page.locator("#files-table tr", has_text="train.jsonl")
    assert "fine-tune" in row.inner_text()
    [uploaded] = client.files.list().data
    assert uploaded.filename == "train.jsonl" and uploaded.purpose == "fine-tune"
    assert client.files.content(uploaded.id).read() == ("\n".join(lines) + "\n").encode()
    assert "POST /files" in requests

    # Above 32 MB a file goes through the Uploads API, in parts, with one progress bar.
    page.get_by_label("Purpose of new files").select_option("assistants")
    drop(page, [], big_mib=33)
    page.locator(".uploads li", has_text="big.txt").get_by_text("Done: file-").wait_for()
    assert page.locator(".uploads li", has_text="big.txt").locator("progress").evaluate("p => p.value === p.max")
    parts = [r for r in requests if r.startswith("POST /uploads/") and r.endswith("/parts")]
    assert "POST /uploads" in requests and len(parts) == 3 and any(r.endswith("/complete") for r in requests)
    big = next(f for f in client.files.list().data if f.filename == "big.txt")
    assert big.bytes == 33 * 1024 * 1024 and big.purpose == "assistants"

    # The preview downloads only the start of a file: the first lines of the JSONL, pretty-printed.
    row.get_by_role("button", name="Preview").click()
    preview = page.locator("#preview-text")
    preview.wait_for()
    assert preview.inner_text().splitlines() == lines[:10]
    assert "The first 10 lines." in page.locator("section", has=preview).inner_text()
    shoot(page, "files")

    # Filter and pages: 12 more small files, 10 a page.
    for i in range(12):
        client.files.create(file=(f"note-{i:02}.txt", b"hello"), purpose="user_data")
    page.get_by_label("Show").select_option("user_data")
    page.get_by_label("Per page").select_option("10")
    expect(page.locator("#files-table tbody tr")).to_have_count(10)
    expect(page.locator("#files-table tbody tr").first).to_contain_text("note-11.txt")
    assert "train.jsonl" not in page.locator("#files-table").inner_text()
    previous, following = page.get_by_role("button", name="Previous page"), page.get_by_role("button", name="Next page")
    assert previous.is_disabled()
    following.click()
    expect(page.locator("#files-table tbody tr")).to_have_count(2)
    expect(page.locator("#files-table tbody tr").last).to_contain_text("note-00.txt")
    expect(following).to_be_disabled()
    previous.click()
    expect(page.locator("#files-table tbody tr")).to_have_count(10)
    expect(previous).to_be_disabled()

    # Download gives the bytes; delete removes the file (after a confirm).
    page.get_by_label("Show").select_option("")
    page.get_by_label("Per page").select_option("50")
    row.wait_for()
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    saved = tmp_path / "download.jsonl"
    info.value.save_as(saved)
    assert saved.read_bytes() == client.files.content(uploaded.id).read()
    row.get_by_role("button", name="Delete").click()
    row.wait_for(state="detached")
    assert uploaded.id not in [f.id for f in client.files.list().data]
