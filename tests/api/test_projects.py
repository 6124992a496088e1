"""Projects and their keys through the SDK's admin API: admin keys only (open mode counts as admin), OpenAI's
shapes with our rate_limits extension, creating a key with limits, changing them, and revoking."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import openai
import pytest

from inhouse.services.keys import CreatedKey
from tests.conftest import make_client
from tests.harness import ServerHandle


def new_key(server: ServerHandle, project: str, **kw: Any) -> CreatedKey:
    created: CreatedKey = server.call(server.services.keys.create(project, **kw))
    server.services.keys._required_cache = None  # the first key closes open mode now, not within 5 s
    return created


def admin_client(server: ServerHandle, token: str) -> Any:
    return make_client(server.base_url, api_key=token, admin_api_key=token).admin.organization.projects


def test_open_mode_counts_as_admin(server: ServerHandle) -> None:
    make_client(server.base_url).files.list()  # open mode answers as the default project
    projects = admin_client(server, "anything")
    [default] = projects.list().data
    assert default.name == "default" and projects.api_keys.list(default.id).data == []


def test_admin_lists_creates_updates_and_revokes(server: ServerHandle) -> None:
    admin = new_key(server, "ops", admin=True)
    user = new_key(server, "team-a", name="ci", rpm=5)
    projects = admin_client(server, admin.token)

    listed = {p.id: p for p in projects.list()}
    assert {admin.project.id, user.project.id} <= set(listed)
    team = listed[user.project.id]
    assert (team.name, team.object, team.status, team.archived_at) == ("team-a", "organization.project", "active",
                                                                        None)
    assert projects.retrieve(user.project.id).id == user.project.id
    page = projects.list(limit=1)
    assert len(page.data) == 1 and page.has_more  # paged by `after`, as the SDK follows it
    assert len(list(projects.list(limit=1).iter_pages())) >= 2

    [key] = projects.api_keys.list(user.project.id).data
    assert (key.id, key.name, key.object, key.owner_project_access) == (user.key.id, "ci",
                                                                        "organization.project.api_key", "active")
    # The secret is all that follows the key's id (urlsafe: it may hold "-" itself, even end in one).
    prefix = f"sk-inh-{user.key.id.removeprefix('key_')}-"
    secret = user.token.removeprefix(prefix)
    assert user.token.startswith(prefix) and key.redacted_value == prefix + "****"
    assert secret not in key.redacted_value
    assert key.last_used_at is None
    extra: Any = key.model_extra
    assert extra["rate_limits"] == {"rpm": 5, "tpm": None} and extra["admin"] is False

    make_client(server.base_url, api_key=user.token).files.list()
    deadline = time.monotonic() + 10  # last use is written with the usage, about once a second
    while projects.api_keys.retrieve(user.key.id, project_id=user.project.id).last_used_at is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # An extension: a key made by an admin, shown once with its value.
    url = f"{server.base_url}/organization/projects/{user.project.id}/api_keys"
    auth = {"authorization": f"Bearer {admin.token}"}
    made = httpx2.post(url, json={"name": "bot", "rpm": 7, "tpm": 0}, headers=auth).json()
    assert made["value"].startswith("sk-inh-") and made["rate_limits"] == {"rpm": 7, "tpm": None}
    bot = make_client(server.base_url, api_key=made["value"])
    assert bot.files.with_raw_response.list().headers["x-ratelimit-limit-requests"] == "7"
    assert httpx2.post(url, json={"rpm": -1}, headers=auth).json()["error"]["param"] == "rpm"
    assert httpx2.post(f"{server.base_url}/organization/projects/proj_nope/api_keys", json={},
                       headers=auth).status_code == 404

    # Changing a key's limits (an extension; OpenAI's own fields of this call are refused, not ignored).
    changed = httpx2.post(f"{url}/{made['id']}", json={"tpm": 1000}, headers=auth).json()
    assert changed["rate_limits"] == {"rpm": 7, "tpm": 1000}
    with pytest.raises(openai.BadRequestError):
        projects.api_keys.update(made["id"], project_id=user.project.id, scopes=["api.all.read"])
    server.services.keys._cache.clear()  # other processes see it within 5 s
    assert bot.files.with_raw_response.list().headers["x-ratelimit-limit-tokens"] == "1000"

    # Revoking: the key stops working, leaves the list, and a second delete is 404.
    gone = projects.api_keys.delete(made["id"], project_id=user.project.id)
    assert (gone.id, gone.deleted, gone.object) == (made["id"], True, "organization.project.api_key.deleted")
    with pytest.raises(openai.AuthenticationError):
        bot.files.list()
    assert [k.id for k in projects.api_keys.list(user.project.id)] == [user.key.id]
    with pytest.raises(openai.NotFoundError):
        projects.api_keys.delete(made["id"], project_id=user.project.id)
    with pytest.raises(openai.NotFoundError):  # a key is found only under its own project
        projects.api_keys.retrieve(user.key.id, project_id=admin.project.id)


def test_non_admin_keys_get_403(server: ServerHandle) -> None:
    user = new_key(server, "team-a")
    projects = admin_client(server, user.token)
    for call in (projects.list, lambda: projects.api_keys.list(user.project.id),
                 lambda: projects.api_keys.delete(user.key.id, project_id=user.project.id)):
        with pytest.raises(openai.PermissionDeniedError) as exc:
            call()
        assert exc.value.code == "insufficient_permissions"
    r = httpx2.post(f"{server.base_url}/organization/projects/{user.project.id}/api_keys", json={"name": "x"},
                    headers={"authorization": f"Bearer {user.token}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_permissions"
    assert make_client(server.base_url, api_key=user.token).files.list().data == []  # the key still works
