"""Authentication as the outermost gate: the key is checked before any body is read, parsed or recorded.

Public without a key: health probes, signed image URLs (their signature is the credential), and the web
console's static files (`GET /console/...`: plain HTML/JS holding no data; what it shows it fetches from /v1
with the user's key, through every check below), and GET /metrics where `metrics.public` says so. In open
mode (no keys, loopback only) a request must also come from this machine: a loopback `Host` (a DNS-rebinding
page sends its own name) and no cross-site browser context (`Origin`, `Sec-Fetch-Site`), so a web page the
user visits cannot drive their local server.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from inhouse.api.errors import error_response, request_id_of
from inhouse.errors import InhouseError, PermissionDenied
from inhouse.services.keys import KeysService

CALLER_KEY = "inhouse.caller"
_PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
_SIGNED_IMAGES = "/v1/images/files/"


_CONSOLE = "/console"


def is_public(scope: Scope) -> bool:
    path: str = scope["path"]
    if path in _PUBLIC_PATHS:
        return True
    if scope["method"] not in ("GET", "HEAD"):
        return False
    if path == "/metrics":  # open only where the operator said so (metrics.public)
        return bool(scope["app"].state.services.settings.metrics.public)
    # Routing matches the same raw path, so whatever starts with /console/ (even /console/../v1/files) reaches
    # only the console's router, which answers from its own table of files.
    return path.startswith(_SIGNED_IMAGES) or path == _CONSOLE or path.startswith(_CONSOLE + "/")


def is_loopback_name(host: str) -> bool:
    """True for `localhost` names and loopback addresses, with or without a port or IPv6 brackets."""
    try:
        name = urlsplit(f"//{host}").hostname if host else None
    except ValueError:  # an unbalanced IPv6 bracket, say
        return False
    if not name:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def local_only(headers: dict[bytes, bytes]) -> None:
    """Open mode answers only this machine: refuse foreign Host names and cross-site browser requests."""
    host = headers.get(b"host", b"").decode("latin-1")
    if host and not is_loopback_name(host):
        raise PermissionDenied(
            f"This server runs without API keys and answers only requests addressed to a loopback name, not "
            f"{host[:100]!r}. Create a key (`inhouse keys create --project NAME`) to serve other names.",
            code="open_mode_host",
        )
    origin = headers.get(b"origin")
    site = headers.get(b"sec-fetch-site", b"").lower()
    foreign_origin = origin is not None and origin != b"null" and not is_loopback_name(_netloc(origin))
    if foreign_origin or origin == b"null" or site == b"cross-site":
        raise PermissionDenied(
            "This server runs without API keys and refuses cross-site browser requests.",
            code="open_mode_cross_site",
        )


def _netloc(origin: bytes) -> str:
    try:
        return urlsplit(origin.decode("latin-1")).netloc
    except ValueError:
        return ""


class Authenticate:
    """Pure ASGI: resolves the caller (project and key) into the scope, or answers 401/403 at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope):
            await self.app(scope, receive, send)
            return
        keys: KeysService = scope["app"].state.services.keys
        headers = dict(scope.get("headers", []))
        try:
            caller = await keys.identify((headers.get(b"authorization") or b"").decode("latin-1"))
            if caller.key_id is None:
                local_only(headers)
        except InhouseError as exc:
            response = error_response(exc, request_id_of(scope))
            if _has_body(headers):
                # The body is never read: close instead of letting the server drain it for the next request.
                response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)


def _has_body(headers: dict[bytes, bytes]) -> bool:
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") not in (b"0", b"")
