"""`/config`: what a client needs to know about this server before signing in (no auth)."""

from __future__ import annotations

from fastapi import APIRouter

from chinwag import __version__
from chinwag.dependencies import AppSettings, Catalog, Mcp
from chinwag.errors import error_responses
from chinwag.schemas.config import Limits, McpServerInfo, ModelInfo, ModelProviderInfo, ServerConfig
from chinwag.services.file_extract import ALLOWED_TYPES

router = APIRouter(prefix="/config", tags=["config"], responses=error_responses())


@router.get("")
async def get_config(settings: AppSettings, catalog: Catalog, mcp: Mcp) -> ServerConfig:
    """Version, models (with context windows), limits, MCP servers (with their state and tools), registration."""
    return ServerConfig(
        version=__version__,
        models=[
            ModelInfo(id=m.id, context_window=m.context_window, default=m.default, vision=m.vision)
            for m in catalog.models()
        ],
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_message_chars=settings.max_message_chars,
            file_types=list(ALLOWED_TYPES),
        ),
        mcp_servers=[McpServerInfo(name=s.name, status=s.status, tools=list(s.tools)) for s in mcp.status()],
        registration=settings.registration,
        model_provider=ModelProviderInfo(
            status="ok" if settings.model_problem is None else "not_configured", detail=settings.model_problem
        ),
    )
