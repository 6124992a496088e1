"""The contract of projects and their API keys (the hash of a key only; the secret never reaches the store)."""

from __future__ import annotations

from typing import Protocol

from inhouse.records import ApiKey, Page, Project


class KeyStore(Protocol):
    """Projects (unique names) and API keys. A revoked key stays stored (its usage still names it) but is never
    active again."""

    async def get_or_create_project(self, name: str) -> Project:
        """The project named `name`, created (fresh id, no limits) if there is none. Two processes asking at once
        for a new name end with one project, and both get it."""
        ...

    async def get_project(self, project_id: str) -> Project | None:
        """The project with that id; None if there is none."""
        ...

    async def get_project_by_name(self, name: str) -> Project | None:
        """The project with that name; None if there is none."""
        ...

    async def update_project(self, project_id: str, *, name: str, rpm: int | None,
                             tpm: int | None) -> Project | None:
        """Replace a project's name and limits (None: unlimited); the updated project, or None if no project has
        that id or another project already has `name` (names stay unique; checked in the same transaction)."""
        ...

    async def list_projects(self, *, after: str | None, limit: int) -> Page[Project]:
        """Projects oldest first; `after` is a project id (an unknown one gives an empty page)."""
        ...

    async def insert_api_key(self, key: ApiKey) -> None:
        """Store a new key. Its project must exist and its id be new (else the backend's integrity error)."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        """The key with that id, revoked or not; None if there is none."""
        ...

    async def list_api_keys(self) -> list[tuple[ApiKey, Project]]:
        """Every key, revoked ones included, with its project; oldest first."""
        ...

    async def list_project_api_keys(self, project_id: str, *, after: str | None, limit: int) -> Page[ApiKey]:
        """The project's active (unrevoked) keys, oldest first; `after` is a key id of the same project (another
        project's or an unknown one gives an empty page)."""
        ...

    async def set_api_key_limits(self, key_id: str, rpm: int | None, tpm: int | None) -> ApiKey | None:
        """Replace an active key's limits (None: unlimited); the updated key, or None if no active key has
        that id."""
        ...

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        """Mark an active key revoked at `at`; True only for the call that revoked it (at most once: a revoked key's
        `revoked_at` never moves), False for an unknown or already revoked key."""
        ...

    async def count_active_api_keys(self) -> int:
        """How many keys are not revoked, in every project (0 means the server may run in open mode)."""
        ...
