"""MCP servers: the configuration file and the pool that keeps them running and lends them to runs."""

from chinwag.mcp.config import McpConfig, StdioServerConfig, UrlServerConfig, load_mcp_config, parse_mcp_config
from chinwag.mcp.pool import McpPool, McpServerStatus
from chinwag.mcp.tools import McpToolError, McpTools

__all__ = [
    "McpConfig",
    "McpPool",
    "McpServerStatus",
    "McpToolError",
    "McpTools",
    "StdioServerConfig",
    "UrlServerConfig",
    "load_mcp_config",
    "parse_mcp_config",
]
