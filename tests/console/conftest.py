"""Fixtures of the console's browser tests: a headless Chromium driven by Playwright, a server with the tiny chat,
embedding and image models, and screenshots written to docs/console/ (what users see, shown in docs/console.md)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inhouse.config import Settings
from tests.api.test_embeddings import tiny_encoder, tiny_settings  # noqa: F401 - fixture
from tests.api.test_images import sd_settings, tiny_sd  # noqa: F401 - fixture
from tests.harness import ServerHandle, start_server
from tests.llm import llm_entry, llm_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000  # model loads on a busy CI machine; every wait still ends as soon as its condition holds


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # Package scope, not session: Playwright's sync API keeps an event loop running on this thread while it is
    # up, and every later test that calls asyncio.run() would fail.
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the console's browser tests need Playwright: .venv/bin/pip install -e '.[test]' (or playwright)")
    path = chromium_path()
    if path is None:
        pytest.skip("the console's browser tests need Chromium: apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context per test (its own sessionStorage); fails the test on any script error or CSP refusal."""
    context = browser.new_context(viewport=WIDE)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" and (
        "Content Security Policy" in m.text or "Uncaught" in m.text) else None)
    pg.on("dialog", lambda d: d.accept())  # confirm() before deleting or cancelling
    yield pg
    if os.environ.get("CONSOLE_DEBUG_SHOTS"):  # a path: the page as the test left it, to see why it failed
        pg.screenshot(path=os.environ["CONSOLE_DEBUG_SHOTS"], full_page=True)
    context.close()
    assert problems == []


def shoot(page: Any, name: str, *, narrow: bool = False) -> None:
    """A screenshot for the docs: the whole page at 1280 px, or at a phone's width."""
    DOCS.mkdir(parents=True, exist_ok=True)
    if narrow:
        page.set_viewport_size(NARROW)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True, animations="disabled", caret="hide")
    if narrow:
        page.set_viewport_size(WIDE)


def all_models_settings(settings_factory: Any, llm_path: Path, encoder_path: Path, sd_path: Path) -> Settings:
    """The tiny chat model (with fast fine-tuning heartbeats), the tiny encoder and the tiny image pipeline."""
    settings = llm_settings(settings_factory, llm_path)
    settings.models = [llm_entry(llm_path), *tiny_settings(settings_factory, encoder_path).models,
                       *sd_settings(settings_factory, sd_path).models]
    settings.embeddings.backend = "torch"
    s = settings.images
    s.steps_low, s.steps_standard, s.steps_hd, s.max_generate_side = 1, 2, 3, 256
    return settings


@pytest.fixture
def console_server(settings_factory: Any, tiny_llm: Path, tiny_encoder: Path,  # noqa: F811 - fixtures
                   tiny_sd: Path) -> Iterator[ServerHandle]:  # noqa: F811
    with start_server(all_models_settings(settings_factory, tiny_llm, tiny_encoder, tiny_sd)) as server:
        yield server


def create_key(server: ServerHandle, project: str = "team") -> str:
    token = server.call(server.services.keys.create(project, name="console")).token
    server.services.keys._required_cache = None  # the 5 s cache would keep the server open a moment longer
    return token


def open_console(page: Any, server: ServerHandle, key: str | None = None, route: str = "") -> None:
    """Load the console; sign in with `key` when the server needs one; land on `route` (a hash path)."""
    page.goto(f"{server.origin}/console/{'#' + route if route else ''}")
    if key is not None:
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
    page.locator("nav#nav").wait_for(state="visible")
