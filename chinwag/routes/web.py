"""The built-in browser client: `index.html` at `/` and `/s/{session_id}`, its files under `/assets/{version}/`.

Every file of `chinwag/web/` is read once when the app is built; `version` is a hash of them all, so an asset's URL
changes whenever any file does and assets can be cached for a year (`immutable`), while `index.html` (which names the
version) is `no-cache`. ES modules import each other by relative paths, so they stay under the same version. Every
answer carries a strict Content-Security-Policy: scripts, styles and connections from this origin only, no inline
script, no framing, no plugins.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.requests import HTTPConnection

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS_PREFIX = "/assets"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE files
}
_LONG_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str


class WebAssets:
    """The client's files, in memory, with the version that names them."""

    def __init__(self, root: Path = WEB_DIR) -> None:
        files: dict[str, _Asset] = {}
        digest = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            rel = path.relative_to(root).as_posix()
            body = path.read_bytes()
            digest.update(rel.encode() + b"\0" + hashlib.sha256(body).digest())
            content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            files[rel] = _Asset(body=body, content_type=content_type)
        self.version = digest.hexdigest()[:16]
        template = files.pop("index.html").body.decode()
        self.index = template.replace("{{ASSETS}}", f"{ASSETS_PREFIX}/{self.version}").encode()
        self._files = files

    def get(self, path: str) -> _Asset | None:
        return self._files.get(path)


def _assets(conn: HTTPConnection) -> WebAssets:
    assets: WebAssets = conn.app.state.web_assets
    return assets


def _index(conn: HTTPConnection) -> Response:
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(_assets(conn).index, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/")
async def index(request: HTTPConnection) -> Response:
    """The client's page."""
    return _index(request)


@router.get("/s/{session_id}")
async def session_page(request: HTTPConnection, session_id: str) -> Response:
    """A deep link to one session: the same page; the client reads the id from the address."""
    return _index(request)


@router.get(ASSETS_PREFIX + "/{version}/{path:path}")
async def asset(request: HTTPConnection, version: str, path: str) -> Response:
    """A file of the client: cached for a year under the current version, revalidated under any other."""
    assets = _assets(request)
    found = assets.get(path)
    if found is None:
        return Response(b"not found", status_code=404, media_type="text/plain", headers=_SECURITY_HEADERS)
    cache = _LONG_CACHE if version == assets.version else "no-cache"
    return Response(found.body, media_type=found.content_type, headers={**_SECURITY_HEADERS, "Cache-Control": cache})
