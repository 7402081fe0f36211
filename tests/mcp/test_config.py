"""The MCP config file: the common `mcpServers` format, defaults, and errors that name the server and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chinwag.config import Settings, SettingsError
from chinwag.main import create_app
from chinwag.mcp import StdioServerConfig, UrlServerConfig, load_mcp_config, parse_mcp_config


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def error_of(data: Any) -> str:
    with pytest.raises(SettingsError) as info:
        parse_mcp_config(data)
    return str(info.value)


def test_unset_means_no_servers() -> None:
    config = load_mcp_config(None)
    assert config.servers == {}
    assert config.enabled_names == []


def test_reads_stdio_and_url_servers_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "mcpServers": {
                "files": {"command": "npx", "args": ["-y", "server-fs", "/tmp"], "env": {"A": "1"}},
                "search": {"url": "https://mcp.example.org/mcp", "timeout_s": 5, "enabled": False},
                "time": {"command": "uvx", "pool_size": 4},
            }
        },
    )
    config = load_mcp_config(path)
    assert list(config.servers) == ["files", "search", "time"]
    files = config.servers["files"]
    assert isinstance(files, StdioServerConfig)
    assert (files.command, files.args, files.env) == ("npx", ["-y", "server-fs", "/tmp"], {"A": "1"})
    assert (files.pool_size, files.timeout_s, files.enabled) == (2, 60.0, True)
    search = config.servers["search"]
    assert isinstance(search, UrlServerConfig)
    assert (search.url, search.timeout_s, search.enabled) == ("https://mcp.example.org/mcp", 5.0, False)
    time_server = config.servers["time"]
    assert isinstance(time_server, StdioServerConfig)
    assert time_server.pool_size == 4
    assert config.enabled_names == ["files", "time"]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({"command": "x", "pool_size": 0}, "mcpServers.fs.pool_size: Input should be greater than or equal to 1"),
        ({"command": "x", "pool_size": "many"}, "mcpServers.fs.pool_size: Input should be a valid integer"),
        ({"command": "x", "timeout_s": -1}, "mcpServers.fs.timeout_s: Input should be greater than 0"),
        ({"command": "x", "enabled": "perhaps"}, "mcpServers.fs.enabled: Input should be a valid boolean"),
        ({"command": "x", "colour": "red"}, "mcpServers.fs.colour: unknown field for a stdio server"),
        ({"command": ""}, "mcpServers.fs.command: String should have at least 1 character"),
        ({"command": "x", "args": "-v"}, "mcpServers.fs.args: Input should be a valid list"),
        ({"command": "x", "env": {"A": 1}}, "mcpServers.fs.env.A: Input should be a valid string"),
        ({"url": "ftp://host/mcp"}, "mcpServers.fs.url: Value error, must be an http:// or https:// URL"),
        ({"url": "http://h/mcp", "pool_size": 3}, "mcpServers.fs.pool_size: unknown field for a URL server"),
        ({"args": ["x"]}, 'mcpServers.fs: needs "command" (a stdio server) or "url"'),
        ({"command": "x", "url": "http://h/mcp"}, 'mcpServers.fs: give either "command" (stdio) or "url"'),
        ("npx server", "mcpServers.fs: must be an object"),
    ],
)
def test_an_invalid_server_names_the_server_and_the_field(server: Any, expected: str) -> None:
    assert expected in error_of({"mcpServers": {"ok": {"command": "y"}, "fs": server}})


def test_every_problem_is_reported_at_once() -> None:
    message = error_of(
        {"mcpServers": {"a": {"command": "x", "pool_size": 0}, "b": {"url": "nope"}, "c": {"command": "x"}}}
    )
    assert "mcpServers.a.pool_size" in message
    assert "mcpServers.b.url" in message
    assert "mcpServers.c" not in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], 'the top level must be an object with an "mcpServers" object'),
        ({"mcpServers": []}, '"mcpServers" must be an object of servers by name'),
        ({"servers": {}}, "unknown top-level field(s) 'servers'"),
        ({"mcpServers": {"bad name!": {"command": "x"}}}, "mcpServers.bad name!: a server name is 1-64 letters"),
    ],
)
def test_an_invalid_file_shape_is_reported(data: Any, expected: str) -> None:
    assert expected in error_of(data)


def test_a_file_that_is_not_json_names_the_variable_and_the_position(tmp_path: Path) -> None:
    path = write(tmp_path, '{"mcpServers": {"fs": {"command": "x",}}}')
    with pytest.raises(SettingsError) as info:
        load_mcp_config(path)
    message = str(info.value)
    assert f"CHINWAG_MCP_CONFIG ({path})" in message
    assert "is not valid JSON" in message
    assert "line 1" in message


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot be read"):
        load_mcp_config(tmp_path / "absent.json")


def test_the_app_refuses_to_start_with_an_invalid_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"mcpServers": {"fs": {"command": "x", "timeout_s": 0}}})
    settings = Settings(_env_file=None, mcp_config=path, secret_key="s" * 40, database_url="postgresql://unused")
    with pytest.raises(SettingsError, match=r"mcpServers\.fs\.timeout_s"):
        create_app(settings)


def test_reads_the_type_cwd_and_stateful_keys_of_other_clients_configs() -> None:
    config = parse_mcp_config(
        {
            "mcpServers": {
                "local": {"type": "stdio", "command": "uvx", "args": ["srv"], "cwd": "/srv/tools", "stateful": True},
                "remote": {"type": "http", "url": "https://mcp.example.org/mcp"},
                "older": {"type": "sse", "url": "https://mcp.example.org/sse", "headers": {"X-Key": "k"}},
                "vscode": {"type": "streamable-http", "url": "https://mcp.example.org/mcp"},
            }
        }
    )
    local, remote, older, vscode = (config.servers[n] for n in ("local", "remote", "older", "vscode"))
    assert isinstance(local, StdioServerConfig)
    assert (local.cwd, local.stateful) == ("/srv/tools", True)
    assert isinstance(remote, UrlServerConfig)
    assert (remote.type, remote.stateful) == ("http", False)
    assert isinstance(older, UrlServerConfig)
    assert older.type == "sse"
    assert isinstance(vscode, UrlServerConfig)
    assert vscode.type == "http"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "websocket", "url": "ws://x"}, "mcpServers.s.type: must be one of"),
        ({"type": "sse", "command": "x"}, 'a server of type "sse" needs "url"'),
        ({"type": "stdio", "url": "http://x/mcp"}, 'a server of type "stdio" needs "command"'),
        ({"url": "http://x/mcp", "cwd": "/tmp"}, "mcpServers.s.cwd: unknown field for a URL server"),
    ],
)
def test_a_wrong_type_or_key_is_named(entry: dict[str, Any], message: str) -> None:
    assert message in error_of({"mcpServers": {"s": entry}})
