"""API keys and projects: create (shown once), hash at rest, authenticate in constant time, revoke."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from inhouse.errors import AuthenticationFailed
from inhouse.ids import now
from inhouse.storage.base import MetadataStore
from inhouse.storage.records import ApiKey, Project

KEY_PREFIX = "sk-inh-"
DEFAULT_PROJECT = "default"
_CACHE_TTL_S = 5.0  # a revoked key stops working within this long, in every process
_CACHE_MAX = 4096


def hash_key(token: str) -> str:
    # Keys carry 240 bits of randomness, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the project, and the key (None in open mode, where no key is needed)."""

    project: Project
    key_id: str | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    project: Project
    token: str


class KeysService:
    def __init__(self, meta: MetadataStore, mode: str, clock: Callable[[], int] = now) -> None:
        self.meta = meta
        self.mode = mode
        self.clock = clock
        self._cache: dict[str, tuple[float, Caller]] = {}
        self._required_cache: tuple[float, bool] | None = None
        self._default: Project | None = None
        # None until decide_mode(): a process that never decided (the CLI) requires keys.
        self._open: bool | None = None

    async def create(self, project_name: str, name: str = "") -> CreatedKey:
        project = await self.meta.get_or_create_project(project_name)
        key_id = "key_" + secrets.token_hex(6)
        token = f"{KEY_PREFIX}{key_id.removeprefix('key_')}-{secrets.token_urlsafe(30)}"
        key = ApiKey(key_id, project.id, hash_key(token), name, self.clock(), None)
        await self.meta.insert_api_key(key)
        return CreatedKey(key, project, token)

    async def list(self) -> list[tuple[ApiKey, Project]]:
        return await self.meta.list_api_keys()

    async def revoke(self, key_id: str) -> bool:
        self._cache.clear()
        return await self.meta.revoke_api_key(key_id, self.clock())

    async def decide_mode(self, loopback: bool) -> bool:
        """Decide once, at start, whether this server runs open (no key needed); returns True if open.

        Open only with auth=off, or auth=auto on a loopback bind while no key exists. Afterwards the
        mode can only close (the first key created closes an auto-open server); revoking never opens."""
        if self.mode == "off":
            self._open = True
        elif self.mode == "required":
            self._open = False
        else:
            self._open = loopback and await self.meta.count_active_api_keys() == 0
        return self._open

    async def auth_required(self) -> bool:
        if not self._open:
            return True
        if self.mode == "off":
            return False
        cached = self._required_cache
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        required = await self.meta.count_active_api_keys() > 0
        if required:
            self._open = False  # latched: a key once created keeps this process closed
        self._required_cache = (time.monotonic() + _CACHE_TTL_S, required)
        return required

    async def default_project(self) -> Project:
        # Projects are never deleted, so the open-mode project is looked up once per process.
        if self._default is None:
            self._default = await self.meta.get_or_create_project(DEFAULT_PROJECT)
        return self._default

    async def authenticate(self, authorization: str | None) -> Project:
        return (await self.identify(authorization)).project

    async def identify(self, authorization: str | None) -> Caller:
        if not await self.auth_required():
            return Caller(await self.default_project(), None)
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
        key = await self.meta.get_api_key(key_id)
        # Compare even when the id is unknown, so timing does not tell which ids exist.
        stored = key.key_hash if key is not None else hash_key(secrets.token_hex(16))
        if not hmac.compare_digest(stored, digest) or key is None or key.revoked_at is not None:
            raise invalid
        project = await self.meta.get_project(key.project_id)
        if project is None:
            raise invalid
        return Caller(project, key.id)


def _redact(token: str) -> str:
    if len(token) <= 8:
        return "****"
    return f"{token[:3]}****{token[-4:]}"
