"""Chat message rules that need no HTTP: roles of any JSON type are a 400, never a crash; `developer` is `system`."""

from __future__ import annotations

from typing import Any

import pytest

from inhouse.errors import InvalidRequest
from inhouse.services.chat import normalize_messages


@pytest.mark.parametrize("role", [["user"], {"a": 1}, None, 3, "robot"])
def test_any_bad_role_is_invalid_request(role: Any) -> None:
    with pytest.raises(InvalidRequest) as exc:
        normalize_messages([{"role": role, "content": "hi"}])
    assert exc.value.param == "messages[0].role"


def test_developer_is_the_system_role() -> None:
    out = normalize_messages([{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert out == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
