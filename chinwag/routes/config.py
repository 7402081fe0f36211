"""`/config`: what a client needs to know about this server before signing in (no auth)."""

from __future__ import annotations

from fastapi import APIRouter

from chinwag import __version__
from chinwag.dependencies import AppSettings
from chinwag.schemas.config import Limits, ModelInfo, ServerConfig
from chinwag.services.file_extract import ALLOWED_TYPES
from chinwag.services.session_service import context_windows

router = APIRouter(prefix="/config", tags=["config"])

# What uploads may be, by name ("PDF", "Markdown", ...): types are judged by content, see file_extract.
UPLOAD_FILE_TYPES: list[str] = ALLOWED_TYPES


@router.get("")
async def get_config(settings: AppSettings) -> ServerConfig:
    """Version, models (with context windows), limits, MCP servers and the registration mode."""
    window = context_windows(settings)
    default = settings.resolved_default_model
    return ServerConfig(
        version=__version__,
        models=[ModelInfo(id=m.id, context_window=window(m.id), default=m.id == default) for m in settings.models],
        limits=Limits(
            max_upload_bytes=settings.max_upload_bytes,
            max_message_chars=settings.max_message_chars,
            file_types=UPLOAD_FILE_TYPES,
        ),
        mcp_servers=[],
        registration=settings.registration,
    )
