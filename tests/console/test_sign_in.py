"""Signing in: a key is asked for only when the server needs one, kept in sessionStorage only, and a wrong or
revoked key is refused; in open mode (loopback, no keys) the console works without one."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import create_key, open_console, shoot
from tests.harness import ServerHandle


def test_sign_in_with_a_key(page: Any, console_server: ServerHandle) -> None:
    key = create_key(console_server)
    page.goto(f"{console_server.origin}/console/")
    page.get_by_role("heading", name="Sign in").wait_for()
    assert page.locator("nav#nav").is_hidden()
    shoot(page, "sign-in")
    page.get_by_label("API key").fill("sk-inh-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="not accepted").wait_for()
    page.get_by_label("API key").fill(key)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
    assert page.evaluate("sessionStorage.getItem('inhouse.console.key')") == key
    assert page.evaluate("localStorage.length") == 0 and key not in page.evaluate("document.cookie")
    assert page.locator(".session").inner_text().endswith("Sign out")
    assert key[-4:] in page.locator(".session").inner_text() and key not in page.content()
    # The models the key may see are what the new-job form offers.
    page.get_by_role("link", name="New job").click()
    models = page.get_by_label("Base model")
    models.locator("option", has_text="tiny-llm").wait_for(state="attached")  # filled from /v1/models, async
    options = models.locator("option").all_inner_texts()
    assert "tiny-llm" in options and "gpt-4o-mini" in options and "tiny-sd" in options
    # A reload keeps the session (same tab); a revoked key signs out with a message.
    page.reload()
    page.get_by_role("heading", name="New fine-tuning job").wait_for()
    keys = console_server.services.keys
    listed = console_server.call(keys.list())
    console_server.call(keys.revoke(listed[0][0].id))
    page.get_by_role("link", name="Files").click()
    page.get_by_role("alert").filter(has_text="stopped working").wait_for()
    assert page.evaluate("sessionStorage.getItem('inhouse.console.key')") is None
    assert page.get_by_role("button", name="Sign out").count() == 0


def test_open_mode_needs_no_key(page: Any, console_server: ServerHandle) -> None:
    open_console(page, console_server)
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
    assert "Open mode" in page.locator(".session").inner_text()
    assert page.get_by_role("button", name="Sign out").count() == 0
    # Usage and keys show only where the server has them.
    links = page.locator("nav#nav a:visible").all_inner_texts()
    assert links[:6] == ["Fine-tuning", "Files", "Batches", "Chat", "Embeddings", "Images"]
    # Keyboard: the skip link is the first control of the page and moves focus to the content.
    assert page.locator("a, button, input, select, textarea").first.inner_text() == "Skip to content"
    page.locator("#skip-link").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # A narrow screen folds the menu behind a button.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.locator("nav#nav").is_hidden()
    menu = page.get_by_role("button", name="Menu")
    menu.click()
    assert menu.get_attribute("aria-expanded") == "true"
    shoot(page, "narrow-menu")
    page.get_by_role("link", name="Files").click()
    page.get_by_role("heading", name="Files", exact=True).wait_for()
    assert page.locator("nav#nav").is_hidden()
