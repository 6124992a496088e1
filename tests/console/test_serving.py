"""The console's static files: public while the API needs a key, right content types, CSP and cache headers, only
files of the bundle (no traversal), and no weakening of the API's own checks."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import httpx2

from inhouse.api.console import CONSOLE_DIR, load_bundle
from tests.console.conftest import create_key
from tests.harness import ServerHandle


def raw_get(server: ServerHandle, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET with the path sent exactly as written (httpx would normalise `..` away)."""
    netloc = urlsplit(server.origin).netloc
    conn = http.client.HTTPConnection(netloc, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_console_is_public_but_the_api_is_not(server: ServerHandle) -> None:
    create_key(server)
    assert httpx2.get(f"{server.base_url}/models").status_code == 401
    page = httpx2.get(f"{server.origin}/console/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="js/app.js">' in page.content
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data: blob:" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
    assert page.headers["x-request-id"].startswith("req_")
    redirect = httpx2.get(f"{server.origin}/console")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/console/"
    for name, ctype in [("js/app.js", "text/javascript; charset=utf-8"), ("console.css", "text/css; charset=utf-8"),
                        ("favicon.svg", "image/svg+xml")]:
        r = httpx2.get(f"{server.origin}/console/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == ctype, name
    head = httpx2.head(f"{server.origin}/console/js/api.js")
    assert head.status_code == 200 and head.content == b""
    again = httpx2.get(f"{server.origin}/console/", headers={"if-none-match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # Anything else under /console still needs the key, and /openapi.json does not list the console.
    assert httpx2.post(f"{server.origin}/console/", content=b"x").status_code == 401


def test_only_bundle_files_are_served(server: ServerHandle) -> None:
    create_key(server)
    bundle = load_bundle(CONSOLE_DIR)
    assert "index.html" in bundle and "js/pages/job.js" in bundle
    assert not any(name.endswith(".py") for name in bundle)
    for path in ["/console/../v1/files", "/console/%2e%2e/v1/files", "/console/..%2fv1/files",
                 "/console/../../pyproject.toml", "/console/../api/console.py", "/console//etc/passwd",
                 "/console/js/", "/console/missing.js", "/console/.hidden"]:
        status, body = raw_get(server, path)
        assert status == 404, (path, status)
        assert b'"error"' in body and b'"object": "list"' not in body
    # A key-protected route reached by a dotted path is not made public by the console's prefix.
    status, _ = raw_get(server, "/v1/files/../../console/")
    assert status == 401


def test_open_mode_checks_still_guard_the_api(server: ServerHandle) -> None:
    # Open mode (no key yet): the console loads for any Host, but the API keeps refusing foreign ones.
    assert httpx2.get(f"{server.origin}/console/", headers={"host": "evil.example"}).status_code == 200
    foreign = httpx2.get(f"{server.base_url}/models", headers={"host": "evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "open_mode_host"
    cross = httpx2.get(f"{server.base_url}/models", headers={"origin": "https://evil.example"})
    assert cross.status_code == 403 and cross.json()["error"]["code"] == "open_mode_cross_site"
    assert httpx2.get(f"{server.base_url}/models").status_code == 200
