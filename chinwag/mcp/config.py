"""The MCP configuration: the common `{"mcpServers": {NAME: {...}}}` JSON file named by `CHINWAG_MCP_CONFIG`.

A server is either a process spoken to over stdio (`command`, `args`, `env`, `cwd`) or an endpoint (`url`, with
`headers`) speaking streamable HTTP or, with `"type": "sse"`, the older SSE transport. `type` (`stdio`, `http`,
`sse`; as Claude Code and VS Code configs write it) is optional: `command` means stdio, `url` streamable HTTP.
Per server, optional: `pool_size` (stdio instances, default 2), `timeout_s` (per tool call, default 60), `enabled`
(default true) and `stateful` (default false: a stdio instance is lent for one tool call at a time, so a few
processes serve many runs; true: for a whole run, for servers that keep state between calls). Anything else is an
error, reported at start with the server's name and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chinwag.config import SettingsError

DEFAULT_POOL_SIZE = 2
DEFAULT_TIMEOUT_S = 60.0
_TYPES = {"stdio": "stdio", "http": "http", "streamable-http": "http", "streamableHttp": "http", "sse": "sse"}
"""`type` values in the wild (Claude Code, VS Code, Cursor) and the transport each means."""
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class _ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=3600)
    enabled: bool = True
    stateful: bool = False
    """Lend an instance for a whole run rather than per tool call (stdio; a URL server is shared either way)."""


class StdioServerConfig(_ServerBase):
    """A server started as a local process; `pool_size` instances run at once, each lent to one run at a time."""

    type: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    pool_size: int = Field(default=DEFAULT_POOL_SIZE, ge=1, le=64)


class UrlServerConfig(_ServerBase):
    """A server reached over streamable HTTP (`type` `http`) or SSE (`sse`); one connection is shared by every run."""

    type: Literal["http", "sse"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value


ServerConfig = StdioServerConfig | UrlServerConfig


class McpConfig(BaseModel):
    """Every configured MCP server by name, in file order."""

    model_config = ConfigDict(frozen=True)

    servers: dict[str, ServerConfig] = Field(default_factory=dict)

    @property
    def enabled_names(self) -> list[str]:
        return [name for name, server in self.servers.items() if server.enabled]


def parse_mcp_config(data: Any, *, source: str = "MCP config") -> McpConfig:
    """Validate the decoded JSON; a problem raises `SettingsError` naming each server and field."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise _error(source, ['the top level must be an object with an "mcpServers" object'])
    unknown = sorted(set(data) - {"mcpServers"})
    if unknown:
        problems.append(f'unknown top-level field(s) {", ".join(map(repr, unknown))}: only "mcpServers" is read')
    raw_servers = data.get("mcpServers", {})
    if not isinstance(raw_servers, dict):
        raise _error(source, [*problems, '"mcpServers" must be an object of servers by name'])

    servers: dict[str, ServerConfig] = {}
    for name, raw in raw_servers.items():
        where = f"mcpServers.{name}"
        if not name or not set(name) <= _NAME_CHARS or len(name) > 64:
            problems.append(f"{where}: a server name is 1-64 letters, digits, '_', '-' or '.'")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be an object")
            continue
        model: type[StdioServerConfig] | type[UrlServerConfig]
        kind = raw.get("type")
        if kind is not None and kind not in _TYPES:
            problems.append(f"{where}.type: must be one of {', '.join(map(repr, _TYPES))}")
            continue
        if kind is not None:
            raw = {**raw, "type": _TYPES[kind]}
        if kind is not None and ("command" in raw) != (_TYPES[kind] == "stdio"):
            needs = '"command"' if _TYPES[kind] == "stdio" else '"url"'
            problems.append(f'{where}: a server of type "{kind}" needs {needs} (and not the other)')
            continue
        if "command" in raw and "url" in raw:
            problems.append(f'{where}: give either "command" (stdio) or "url" (HTTP), not both')
            continue
        if "command" in raw:
            model = StdioServerConfig
        elif "url" in raw:
            model = UrlServerConfig
        else:
            problems.append(f'{where}: needs "command" (a stdio server) or "url" (a streamable HTTP server)')
            continue
        try:
            servers[name] = model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(part) for part in err["loc"])
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = f"unknown field for a {'stdio' if model is StdioServerConfig else 'URL'} server"
                problems.append(f"{where}.{field}: {msg}")
    if problems:
        raise _error(source, problems)
    return McpConfig(servers=servers)


def load_mcp_config(path: Path | None) -> McpConfig:
    """Read `CHINWAG_MCP_CONFIG`; None means no MCP servers. A missing or invalid file raises `SettingsError`."""
    if path is None:
        return McpConfig()
    source = f"CHINWAG_MCP_CONFIG ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _error(source, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(source, [f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]) from None
    return parse_mcp_config(data, source=source)


def _error(source: str, problems: list[str]) -> SettingsError:
    return SettingsError(f"invalid {source}:\n  " + "\n  ".join(problems))
