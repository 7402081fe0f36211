"""`GET /config`: public, no auth; models with their windows, limits, MCP servers, registration."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from chinwag import __version__
from chinwag.config import DEFAULT_CONTEXT_WINDOW, DEFAULT_MODEL, MiB
from chinwag.llm.catalog import known_context_window
from chinwag.mcp import McpPool
from chinwag.services.file_extract import ALLOWED_TYPES
from tests.conftest import ServerFactory
from tests.mcp.support import fake_stdio


async def test_default_config(client: httpx.AsyncClient) -> None:
    response = await client.get("/config")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "models", "limits", "mcp_servers", "registration", "model_provider"}
    assert body["version"] == __version__
    window = known_context_window(DEFAULT_MODEL) or DEFAULT_CONTEXT_WINDOW
    assert body["models"] == [{"id": DEFAULT_MODEL, "context_window": window, "default": True, "vision": True}]
    assert body["limits"] == {"max_upload_bytes": 20 * MiB, "max_message_chars": 100_000, "file_types": ALLOWED_TYPES}
    assert body["mcp_servers"] == []
    assert body["registration"] == "open"  # the test servers' setting


async def test_config_follows_settings(server_factory: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"fake": fake_stdio(pool_size=1), "off": fake_stdio(enabled=False)}}))
    server = await server_factory(
        models="llama3:8192,qwen",
        default_model="qwen",
        registration="closed",
        max_upload_bytes=1234,
        max_message_chars=99,
        mcp_config=path,
    )
    pool = server.app.state.mcp
    assert isinstance(pool, McpPool)
    await pool.wait_started()
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=10) as client:
        # a bad token does not matter here: the config is public
        body = (await client.get("/config", headers={"Authorization": "Bearer not-a-token"})).json()
    assert body["models"] == [
        {"id": "llama3", "context_window": 8192, "default": False, "vision": False},
        {
            "id": "qwen",
            "context_window": known_context_window("qwen") or DEFAULT_CONTEXT_WINDOW,
            "default": True,
            "vision": False,
        },
    ]
    assert body["limits"]["max_upload_bytes"] == 1234
    assert body["limits"]["max_message_chars"] == 99
    assert body["registration"] == "closed"
    servers = {s["name"]: s for s in body["mcp_servers"]}
    assert set(servers) == {"fake", "off"}
    assert servers["fake"]["status"] == "ready"
    assert servers["fake"]["tools"]  # the fake server's tools, by name
    assert all(isinstance(t, str) for t in servers["fake"]["tools"])
    assert servers["off"] == {"name": "off", "status": "disabled", "tools": []}
