"""API keys and projects: create (shown once), hash at rest, authenticate in constant time, limit, revoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from inhouse.errors import AuthenticationFailed, InvalidRequest, NotFound
from inhouse.ids import now
from inhouse.records import ApiKey, Page, Project
from inhouse.storage.base import KeyStore

KEY_PREFIX = "sk-inh-"
DEFAULT_PROJECT = "default"
_CACHE_TTL_S = 5.0  # a revoked key stops working within this long, in every process
_CACHE_MAX = 4096
MAX_LIMIT = 10**12


def hash_key(token: str) -> str:
    # Keys carry 240 bits of randomness, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the project, and the key (None in open mode, where no key is needed), with what the key
    may do: admin (open mode counts as admin) and its limits per minute (None: unlimited). The project's own
    limits, shared by all its keys, come with the project as it was read when the key was identified (so a
    change reaches a running server within the key cache's life)."""

    project: Project
    key_id: str | None
    admin: bool = False
    rpm: int | None = None
    tpm: int | None = None

    @property
    def project_rpm(self) -> int | None:
        return self.project.rpm

    @property
    def project_tpm(self) -> int | None:
        return self.project.tpm


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    project: Project
    token: str


class KeysService:
    def __init__(self, store: KeyStore, mode: str, clock: Callable[[], int] = now) -> None:
        self.store = store
        self.mode = mode
        self.clock = clock
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._required_cache: tuple[float, bool] | None = None
        self._default: Project | None = None
        # None until decide_mode(): a process that never decided (the CLI) requires keys.
        self._open: bool | None = None

    async def create(self, project_name: str, name: str = "", *, rpm: int | None = None, tpm: int | None = None,
                     admin: bool = False) -> CreatedKey:
        """A new key of the project called `project_name` (made if new); limits of None or 0 are unlimited."""
        rpm, tpm = _limit(rpm, "rpm"), _limit(tpm, "tpm")  # checked before the project is made
        return await self._create(await self.store.get_or_create_project(project_name), name, rpm, tpm, admin)

    async def create_in(self, project_id: str, name: str = "", *, rpm: int | None = None,
                        tpm: int | None = None) -> CreatedKey:
        """A new (non-admin) key of an existing project, by id."""
        return await self._create(await self.project(project_id), name, rpm, tpm, False)

    async def _create(self, project: Project, name: str, rpm: int | None, tpm: int | None,
                      admin: bool) -> CreatedKey:
        rpm, tpm = _limit(rpm, "rpm"), _limit(tpm, "tpm")
        key_id = "key_" + secrets.token_hex(6)
        token = f"{KEY_PREFIX}{key_id.removeprefix('key_')}-{secrets.token_urlsafe(30)}"
        key = ApiKey(key_id, project.id, hash_key(token), name, self.clock(), None, rpm, tpm, admin)
        await self.store.insert_api_key(key)
        return CreatedKey(key, project, token)

    async def update_limits(self, key_id: str, changes: dict[str, int | None]) -> ApiKey:
        """Set `rpm` and/or `tpm` (the ones in `changes`; None or 0 is unlimited) of an active key. A running
        server sees the change within the key cache's 5 s."""
        key = await self.store.get_api_key(key_id)
        if key is None or key.revoked_at is not None:
            raise NotFound(f"No active API key {key_id!r}.", param="api_key_id")
        rpm = _limit(changes["rpm"], "rpm") if "rpm" in changes else key.rpm
        tpm = _limit(changes["tpm"], "tpm") if "tpm" in changes else key.tpm
        updated = await self.store.set_api_key_limits(key_id, rpm, tpm)
        if updated is None:
            raise NotFound(f"No active API key {key_id!r}.", param="api_key_id")
        self._cache.clear()
        return updated

    async def project(self, project_id: str) -> Project:
        project = await self.store.get_project(project_id)
        if project is None:
            raise NotFound(f"No project found with id '{project_id}'.", param="project_id")
        return project

    async def project_named(self, name_or_id: str) -> Project:
        """A project by its name, or else by its id (404 if neither)."""
        project = await self.store.get_project_by_name(name_or_id) or await self.store.get_project(name_or_id)
        if project is None:
            raise NotFound(f"No project named {name_or_id!r}.", param="project")
        return project

    async def update_project(self, project_id: str, *, name: str | None = None,
                             limits: dict[str, int | None] | None = None) -> Project:
        """Rename a project and/or set its `rpm` and `tpm` (the ones in `limits`; None or 0 is unlimited), shared
        by all its keys together. A running server sees the change within the key cache's 5 s."""
        project = await self.project(project_id)
        limits = limits or {}
        rpm = _limit(limits["rpm"], "rpm") if "rpm" in limits else project.rpm
        tpm = _limit(limits["tpm"], "tpm") if "tpm" in limits else project.tpm
        if name is not None and name != project.name:
            if not name.strip():
                raise InvalidRequest("'name' must not be empty.", param="name")
            if project.name == DEFAULT_PROJECT:
                raise InvalidRequest("The default project cannot be renamed: open mode uses it by name.",
                                     param="name")
        updated = await self.store.update_project(project_id, name=project.name if name is None else name, rpm=rpm,
                                                 tpm=tpm)
        if updated is None:  # projects are never deleted: the name is another project's
            raise InvalidRequest(f"A project named {name!r} already exists.", param="name")
        self._cache.clear()
        return updated

    async def projects(self, *, after: str | None, limit: int) -> Page[Project]:
        return await self.store.list_projects(after=after, limit=limit)

    async def project_keys(self, project_id: str, *, after: str | None, limit: int) -> Page[ApiKey]:
        """The project's active keys (404 for an unknown project)."""
        await self.project(project_id)
        return await self.store.list_project_api_keys(project_id, after=after, limit=limit)

    async def project_key(self, project_id: str, key_id: str) -> ApiKey:
        """An active key of the project; 404 if it is revoked, unknown, or another project's."""
        key = await self.store.get_api_key(key_id)
        if key is None or key.project_id != project_id or key.revoked_at is not None:
            raise NotFound(f"No API key found with id '{key_id}' in project '{project_id}'.", param="api_key_id")
        return key

    async def list(self) -> list[tuple[ApiKey, Project]]:
        return await self.store.list_api_keys()

    async def revoke(self, key_id: str) -> bool:
        self._cache.clear()
        return await self.store.revoke_api_key(key_id, self.clock())

    async def decide_mode(self, loopback: bool) -> bool:
        """Decide once, at start, whether this server runs open (no key needed); returns True if open.

        Open only with auth=off, or auth=auto on a loopback bind while no key exists. Afterwards the
        mode can only close (the first key created closes an auto-open server); revoking never opens."""
        if self.mode == "off":
            self._open = True
        elif self.mode == "required":
            self._open = False
        else:
            self._open = loopback and await self.store.count_active_api_keys() == 0
        return self._open

    async def auth_required(self) -> bool:
        if not self._open:
            return True
        if self.mode == "off":
            return False
        cached = self._required_cache
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        required = await self.store.count_active_api_keys() > 0
        if required:
            self._open = False  # latched: a key once created keeps this process closed
        self._required_cache = (time.monotonic() + _CACHE_TTL_S, required)
        return required

    async def default_project(self) -> Project:
        # Projects are never deleted, so the open-mode project is looked up once per process.
        if self._default is None:
            self._default = await self.store.get_or_create_project(DEFAULT_PROJECT)
        return self._default

    async def authenticate(self, authorization: str | None) -> Project:
        return (await self.identify(authorization)).project

    async def identify(self, authorization: str | None) -> Caller:
        if not await self.auth_required():
            return Caller(await self.default_project(), None, admin=True)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        token = authorization[7:].strip()
        digest = hash_key(token)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        caller = await self._lookup(token, digest)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + _CACHE_TTL_S, caller)
        return caller

    async def _lookup(self, token: str, digest: str) -> Caller:
        invalid = AuthenticationFailed(
            f"Incorrect API key provided: {_redact(token)}.", code="invalid_api_key"
        )
        if not token.startswith(KEY_PREFIX):
            raise invalid
        key_id = "key_" + token.removeprefix(KEY_PREFIX).split("-", 1)[0]
        key = await self.store.get_api_key(key_id)
        # Compare even when the id is unknown, so timing does not tell which ids exist.
        stored = key.key_hash if key is not None else hash_key(secrets.token_hex(16))
        if not hmac.compare_digest(stored, digest) or key is None or key.revoked_at is not None:
            raise invalid
        project = await self.store.get_project(key.project_id)
        if project is None:
            raise invalid
        return Caller(project, key.id, key.admin, key.rpm, key.tpm)


def _limit(value: int | None, name: str) -> int | None:
    """A limit as stored: None for unlimited (given as None or 0)."""
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LIMIT:
        raise InvalidRequest(f"'{name}' must be a whole number from 0 (unlimited) to {MAX_LIMIT}.", param=name)
    return value


def _redact(token: str) -> str:
    if len(token) <= 8:
        return "****"
    return f"{token[:3]}****{token[-4:]}"
