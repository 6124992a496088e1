"""The web console's static files under /console: public (the data they show is fetched with the user's key)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from inhouse.errors import NotFound

router = APIRouter(tags=["console"], include_in_schema=False)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
# Only these kinds of file are served; anything else in the directory (say, an editor's backup) is not.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
# Scripts, styles and API calls only from this origin (no inline script, no CDN); pictures may also be data:
# and blob: URLs (generated images, the mask canvas, previews); nobody may frame the console.
CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
MAX_ASSETS = 256  # the bundle is a few dozen small files; a bound on what is held in memory


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_bundle(directory: Path) -> dict[str, Asset]:
    """Every servable file under `directory`, by its relative POSIX path. Requests are answered only from this
    table, so no path a client sends can reach a file outside it."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        ctype = CONTENT_TYPES.get(path.suffix)
        if ctype is None or not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if len(assets) >= MAX_ASSETS:
            raise RuntimeError(f"the console bundle has more than {MAX_ASSETS} files")
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[rel.as_posix()] = Asset(body, ctype, etag)
    return assets


class Bundle:
    """The console's files, read once (off the event loop) on first use and held in memory. Two first requests
    may both read the directory; the reads are the same, so no lock (which would tie it to one event loop)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._assets: dict[str, Asset] | None = None

    async def get(self, name: str) -> Asset | None:
        if self._assets is None:
            self._assets = await asyncio.to_thread(load_bundle, self.directory)
        return self._assets.get(name)


BUNDLE = Bundle(CONSOLE_DIR)


def _answer(asset: Asset, request: Request) -> Response:
    headers = {
        "etag": asset.etag,
        # Revalidated on every load (a 304 when unchanged), so an upgraded server never runs a stale script.
        "cache-control": "no-cache",
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cross-origin-opener-policy": "same-origin",
    }
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


@router.api_route("/console", methods=["GET", "HEAD"])
async def console_root() -> RedirectResponse:
    # The page's relative URLs (its scripts, ../v1) resolve against /console/, so it is served there only.
    return RedirectResponse("/console/", status_code=308)


@router.api_route("/console/{name:path}", methods=["GET", "HEAD"])
async def console_file(name: str, request: Request) -> Response:
    asset = await BUNDLE.get(name or "index.html")
    if asset is None:
        raise NotFound(f"No such console file: {name[:100]}")
    return _answer(asset, request)
