"""The browser client's files: where they are served, their cache headers and security headers, and that the API,
the socket, health and the OpenAPI pages are never shadowed by them."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from chinwag.routes.web import WEB_DIR, WebAssets

ASSET = re.compile(r'(?:href|src)="(/assets/[^"]+)"')
IMPORT = re.compile(r"""^\s*import\s+(?:[^'"]+\s+from\s+)?['"](\.[^'"]+)['"]""", re.MULTILINE)


def check_security_headers(answer: httpx.Response) -> None:
    csp = answer.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_the_page_is_served_at_the_root_and_at_session_links_never_cached(root_client: httpx.AsyncClient) -> None:
    for path in ("/", "/s/0b5d7c1e-1111-4222-8333-444455556666"):
        answer = await root_client.get(path)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["cache-control"] == "no-cache"
        check_security_headers(answer)
        assert '<script type="module"' in answer.text
        assert "<script>" not in answer.text  # no inline script: the CSP would refuse it
        assert "style=" not in answer.text
        assert "{{ASSETS}}" not in answer.text


async def test_assets_are_versioned_and_cached_for_a_year(root_client: httpx.AsyncClient) -> None:
    page = (await root_client.get("/")).text
    links = ASSET.findall(page)
    assert any(link.endswith("/app.js") for link in links)
    assert any(link.endswith("/app.css") for link in links)
    for link in links:
        answer = await root_client.get(link)
        assert answer.status_code == 200, link
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        check_security_headers(answer)
    js = await root_client.get(next(link for link in links if link.endswith("/app.js")))
    assert js.headers["content-type"].startswith("text/javascript")


async def test_an_asset_under_another_version_is_served_but_revalidated(root_client: httpx.AsyncClient) -> None:
    answer = await root_client.get("/assets/0000000000000000/app.js")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-cache"
    missing = await root_client.get("/assets/0000000000000000/../../main.py")
    assert missing.status_code == 404
    assert (await root_client.get("/assets/x/nope.js")).status_code == 404


async def test_the_client_never_shadows_the_api(root_client: httpx.AsyncClient) -> None:
    config = await root_client.get("/api/v1/config")
    assert config.status_code == 200
    assert "models" in config.json()
    assert (await root_client.get("/health/live")).json() == {"status": "ok"}
    assert (await root_client.get("/openapi.json")).json()["info"]["title"] == "chinwag"
    assert (await root_client.get("/docs")).status_code == 200
    unknown = await root_client.get("/api/v1/nope")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/json")
    paths = (await root_client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/s/", "/assets"))]


def test_every_relative_import_of_the_client_exists() -> None:
    """No build step: the browser resolves these paths as they are written."""
    modules = sorted(WEB_DIR.glob("*.js"))
    assert modules
    for module in modules:
        for target in IMPORT.findall(module.read_text()):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"


def test_every_vendored_library_ships_its_licence() -> None:
    for folder in (p for p in (WEB_DIR / "vendor").iterdir() if p.is_dir()):
        assert list(folder.glob("LICENSE*")), folder.name
    assert WebAssets(WEB_DIR).get("vendor/README.md") is not None


def test_the_version_changes_when_a_file_does(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script type="module" src="{{ASSETS}}/app.js"></script>')
    (tmp_path / "app.js").write_text("one")
    before = WebAssets(tmp_path).version
    (tmp_path / "app.js").write_text("two")
    assert WebAssets(tmp_path).version != before
