"""Each kind of model reads its own section of the settings: image pipelines take images.threads and
images.idle_unload_seconds, chat models fine_tuning.idle_unload_seconds; the idle reaper runs often enough for
the shortest of them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inhouse import app, bootstrap
from inhouse.bootstrap import build_services
from inhouse.config import ModelEntry, Settings
from inhouse.services.container import Services

IMAGE = ModelEntry(id="fake-image", kind="image", path="/nowhere")
CHAT = ModelEntry(id="fake-chat", kind="chat", path="/nowhere")


class FakeEngine:
    """Records what it was built with; idle since a minute ago."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.closed = False

    def idle_since(self) -> float:
        return time.monotonic() - 60

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Services built from the given settings, with the image and chat engines replaced by FakeEngine."""
    monkeypatch.setattr(bootstrap, "DiffusionEngine", FakeEngine)
    monkeypatch.setattr(bootstrap, "CausalEngine", FakeEngine)
    monkeypatch.setattr(bootstrap, "pipeline_dir", lambda entry, models_dir: Path(entry.path))
    monkeypatch.setattr(bootstrap, "model_dir", lambda entry, models_dir: Path(entry.path))
    built: list[Services] = []

    def make(**sections: Any) -> Services:
        services = build_services(Settings(data_dir=tmp_path / "data", **sections))
        built.append(services)
        return services

    yield make
    for services in built:
        services.executors.shutdown()


def test_image_pipelines_take_images_threads_not_fine_tuning_threads(build: Any) -> None:
    services = build(images={"threads": 3}, fine_tuning={"threads": 5})
    engine = asyncio.run(services.images.engines.get(IMAGE))
    assert isinstance(engine, FakeEngine)
    assert engine.args[1] == 3  # DiffusionEngine(path, threads, plan_relations)
    chat = asyncio.run(services.chat_engines.get(CHAT))
    assert isinstance(chat, FakeEngine) and chat.args[1] == 5  # CausalEngine(path, threads)


def test_image_registry_unloads_by_images_idle_unload_seconds_only(build: Any) -> None:
    services = build(images={"idle_unload_seconds": 5}, embeddings={"idle_unload_seconds": 10_000},
                     fine_tuning={"idle_unload_seconds": 10_000})
    assert services.images.engines.idle_unload_s == 5
    engine = asyncio.run(services.images.engines.get(IMAGE))
    assert asyncio.run(services.images.engines.unload_idle()) == ["fake-image"]  # idle 60 s > 5 s
    assert isinstance(engine, FakeEngine) and engine.closed


def test_chat_models_unload_by_fine_tuning_idle_unload_seconds(build: Any) -> None:
    services = build(fine_tuning={"idle_unload_seconds": 30}, embeddings={"idle_unload_seconds": 10_000})
    assert services.chat_engines.idle_unload_s == 30
    assert services.chat.full_engines.idle_unload_s == 30
    assert services.embedding_engines.idle_unload_s == 10_000
    asyncio.run(services.chat_engines.get(CHAT))
    assert asyncio.run(services.chat_engines.unload_idle()) == ["fake-chat"]  # idle 60 s > 30 s

    services = build(fine_tuning={"idle_unload_seconds": 10_000}, embeddings={"idle_unload_seconds": 30})
    asyncio.run(services.chat_engines.get(CHAT))
    assert asyncio.run(services.chat_engines.unload_idle()) == []  # the embeddings setting is not the chat one


def test_settings_sections_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INHOUSE_IMAGES__THREADS", "2")
    monkeypatch.setenv("INHOUSE_FINE_TUNING__IDLE_UNLOAD_SECONDS", "120")
    settings = Settings(data_dir=tmp_path)
    assert settings.images.threads == 2 and settings.fine_tuning.threads == 0
    assert settings.fine_tuning.idle_unload_seconds == 120 and settings.embeddings.idle_unload_seconds == 900


@pytest.mark.parametrize(("sections", "period"), [
    ({}, 60.0),  # defaults: 900 s everywhere, checked every minute
    ({"images": {"idle_unload_seconds": 8}}, 2.0),
    ({"fine_tuning": {"idle_unload_seconds": 20}}, 5.0),
    ({"embeddings": {"idle_unload_seconds": 12}, "images": {"idle_unload_seconds": 40}}, 3.0),
    ({"images": {"idle_unload_seconds": 1}}, 1.0),  # never more often than once a second
])
def test_the_idle_check_follows_the_shortest_idle_time(tmp_path: Path, sections: dict[str, Any],
                                                       period: float) -> None:
    assert app.idle_check_period(Settings(data_dir=tmp_path, **sections)) == period
