"""`GET /config`: public, no auth; models with their windows, limits, registration."""

from __future__ import annotations

import httpx

from chinwag import __version__
from chinwag.config import DEFAULT_CONTEXT_WINDOW, DEFAULT_MODEL, MiB
from tests.conftest import ServerFactory


async def test_default_config(client: httpx.AsyncClient) -> None:
    response = await client.get("/config")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "models", "limits", "mcp_servers", "registration"}
    assert body["version"] == __version__
    assert body["models"] == [{"id": DEFAULT_MODEL, "context_window": DEFAULT_CONTEXT_WINDOW, "default": True}]
    assert body["limits"]["max_upload_bytes"] == 20 * MiB
    assert body["limits"]["max_message_chars"] == 100_000
    assert isinstance(body["limits"]["file_types"], list)
    assert body["mcp_servers"] == []
    assert body["registration"] == "open"  # the test servers' setting


async def test_config_follows_settings(server_factory: ServerFactory) -> None:
    server = await server_factory(
        models="llama3:8192,qwen",
        default_model="qwen",
        registration="closed",
        max_upload_bytes=1234,
        max_message_chars=99,
    )
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as client:
        body = (await client.get("/config", headers={"Authorization": "Bearer not-a-token"})).json()
    assert body["models"] == [
        {"id": "llama3", "context_window": 8192, "default": False},
        {"id": "qwen", "context_window": DEFAULT_CONTEXT_WINDOW, "default": True},
    ]
    assert body["limits"]["max_upload_bytes"] == 1234
    assert body["limits"]["max_message_chars"] == 99
    assert body["registration"] == "closed"
