"""Models API: configured models and aliases, ids with `/` and `:`, delete only fine-tunes."""

from __future__ import annotations

import time

import httpx2
import openai
import pytest

from inhouse.records import ModelRecord
from tests.harness import ServerHandle

FT = "ft:org/base-model:default:suffix:abc12345"


def add_finetune(server: ServerHandle, model_id: str = FT) -> None:
    services = server.services

    async def go() -> None:
        project = await services.keys.default_project()
        await services.meta.models.insert_model(
            ModelRecord(model_id, project.id, int(time.time()), "user-default", "chat", "org/base-model", "x")
        )

    server.call(go())


def test_list_and_retrieve_configured(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    for name in ("all-MiniLM-L6-v2", "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"):
        assert name in ids
    m = client.models.retrieve("text-embedding-3-small")
    assert (m.id, m.object, m.owned_by) == ("text-embedding-3-small", "model", "system")
    assert m.created > 0


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("gpt-nope")
    assert exc.value.code == "model_not_found"
    assert "`gpt-nope` does not exist" in exc.value.message


def test_ids_with_slash_and_colon(server: ServerHandle, client: openai.OpenAI) -> None:
    add_finetune(server)
    assert FT in [m.id for m in client.models.list()]
    assert client.models.retrieve(FT).id == FT  # the SDK sends `/` as %2F
    raw = httpx2.get(f"{server.base_url}/models/{FT}")  # older clients send it raw
    assert raw.status_code == 200 and raw.json()["id"] == FT


def test_delete_only_fine_tunes(server: ServerHandle, client: openai.OpenAI) -> None:
    add_finetune(server)
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("text-embedding-3-small")
    deleted = client.models.delete(FT)
    assert (deleted.id, deleted.deleted) == (FT, True)
    with pytest.raises(openai.NotFoundError):
        client.models.delete(FT)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(FT)
