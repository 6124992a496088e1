"""Usage and keys in the console: an admin key sees both pages; usage per key and per model moves as another key
makes requests; a key made in the console is shown once, works, and stops working once revoked there."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from tests.conftest import make_client
from tests.console.conftest import open_console, shoot
from tests.harness import ServerHandle

expect = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright").expect


def totals(page: Any) -> dict[str, list[str]]:
    """The usage totals table: label -> [requests, tokens, images, training tokens]."""
    rows = page.locator("#usage-totals tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")
    return {row[0]: row[1:] for row in rows}


def refresh_until(page: Any, check: Any, timeout: float = 60) -> None:
    """Usage is written about once a second: refresh the page's numbers until `check(page)` holds."""
    deadline = time.monotonic() + timeout
    while not check(page):
        assert time.monotonic() < deadline, totals(page)
        page.get_by_role("button", name="Refresh").click()
        expect(page.get_by_role("button", name="Refresh")).to_be_enabled()


def test_usage_moves_and_keys_are_managed(page: Any, console_server: ServerHandle) -> None:
    keys = console_server.services.keys
    admin = console_server.call(keys.create("team", name="admin", admin=True)).token
    worker = console_server.call(keys.create("team", name="worker"))
    keys._required_cache = None
    open_console(page, console_server, admin, "/usage")
    page.get_by_role("heading", name="Usage").wait_for()
    expect(page.locator("nav#nav").get_by_role("link", name="API keys")).to_be_visible()
    page.locator("#usage-charts figure").first.wait_for()

    client = make_client(console_server.base_url, api_key=worker.token)
    embedded = [client.embeddings.create(model="text-embedding-3-small", input=text, encoding_format="float")
                .usage.prompt_tokens for text in (["a red circle", "a blue square"], "a green star")]
    chat = client.chat.completions.create(model="gpt-4o-mini", max_tokens=4,
                                          messages=[{"role": "user", "content": "ping"}])
    client.images.generate(model="dall-e-2", prompt="a red circle", size="256x256", response_format="b64_json")
    assert chat.usage is not None
    # Per key, named as the admin's key list names it (the open-mode row, if any, is another one).
    row_of = lambda p: next((v for k, v in totals(p).items() if k.startswith("worker (")), None)  # noqa: E731
    refresh_until(page, lambda p: (row_of(p) or [""])[0] == "4")
    _, tokens, images, trained = row_of(page)
    assert images == "1" and trained == "0"
    assert int(tokens.replace(",", "")) == chat.usage.total_tokens + sum(embedded)
    chart = page.locator("#usage-charts figure", has_text="Requests per day")
    assert chart.locator("g.series").count() >= 1
    shoot(page, "usage")
    page.get_by_label("Group by").select_option("model")
    expect(page.locator("#usage-totals")).to_contain_text("text-embedding-3-small")
    by_model = totals(page)
    assert by_model["text-embedding-3-small"][0] == "2" and by_model["dall-e-2"][2] == "1"

    # Keys: list, create with limits (the value shown once), use it, revoke it.
    page.locator("nav#nav").get_by_role("link", name="API keys").click()
    table = page.locator("#keys-table")
    expect(table).to_contain_text("worker")
    expect(table).to_contain_text("admin")
    page.get_by_label("Name").fill("ci")
    page.get_by_label("Requests per minute").fill("60")
    page.get_by_role("button", name="Create key").click()
    value = page.locator("#new-key-value")
    value.wait_for()
    token = value.input_value()
    assert token.startswith("sk-inh-")
    row = table.locator("tr", has_text="ci")
    expect(row).to_contain_text("60")
    shoot(page, "keys")
    assert make_client(console_server.base_url, api_key=token).models.list().data
    row.get_by_role("button", name="Revoke ci").click()
    expect(row).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        make_client(console_server.base_url, api_key=token).models.list()


def test_keys_page_is_hidden_from_other_keys(page: Any, console_server: ServerHandle) -> None:
    keys = console_server.services.keys
    worker = console_server.call(keys.create("team", name="worker")).token
    keys._required_cache = None
    open_console(page, console_server, worker)
    page.locator("nav#nav a", has_text="Usage").wait_for()  # shown once the server is found to have usage
    links = page.locator("nav#nav a:visible").all_inner_texts()
    assert "Usage" in links and "API keys" not in links
    page.goto(f"{console_server.origin}/console/#/keys")
    page.get_by_text("Only an admin key may manage keys.").wait_for()
