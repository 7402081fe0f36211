"""`/docs` (Swagger UI) and `/redoc` (ReDoc), working with no internet: their scripts and styles come from the
pinned `fastapi-offline` wheel, which vendors Swagger UI 5 and ReDoc 2 (MIT and Apache-2.0; see its licence
files), and are served by chinwag itself under `/docs/assets/`.

These pages get a policy of their own: both run one inline script (the page's set-up), ReDoc builds a web worker
from a blob and both draw inline SVG and styles; everything else still comes from this origin only.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response

from chinwag.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"
_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {"Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(_HEADERS)
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _with_policy(
        get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="chinwag API - Swagger UI",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            # The token typed into Authorize survives a reload of the page.
            swagger_ui_parameters={"persistAuthorization": True, "displayOperationId": True},
        )
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return _with_policy(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _with_policy(
        get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title="chinwag API - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
    )


class _Assets:
    """The vendored files, read once."""

    def __init__(self) -> None:
        static = files("fastapi_offline") / "static"
        self.bodies = {name: (static / name).read_bytes() for name in _FILES}


@router.get(ASSETS + "/{name}")
async def asset(name: str, request: Request) -> Response:
    assets: _Assets = request.app.state.docs_assets
    body = assets.bodies.get(name)
    if body is None:
        raise NotFound("No such file.")
    return Response(body, media_type=_FILES[name], headers={"Cache-Control": "public, max-age=86400"})


def assets() -> _Assets:
    """For `create_app` (`app.state.docs_assets`)."""
    return _Assets()
