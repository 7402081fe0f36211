"""Liveness and readiness, outside the API prefix and without auth."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from chinwag.dependencies import Mcp, Pool

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    """What `/health/ready` answers, 200 or 503 alike."""

    status: str
    database: str
    mcp_servers: list[dict[str, Any]]


@router.get(
    "/ready",
    response_model=None,
    responses={200: {"model": Readiness}, 503: {"model": Readiness, "description": "The database is unreachable"}},
)
async def ready(pool: Pool, mcp: Mcp) -> JSONResponse:
    """The database answers (503 while it does not); each MCP server's state, which never makes the server unready."""
    body: dict[str, Any] = {
        "status": "ok",
        "database": "ok",
        "mcp_servers": [
            {"name": s.name, "status": s.status, "tools": list(s.tools), "error": s.error} for s in mcp.status()
        ],
    }
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception:
        body.update(status="unavailable", database="unreachable")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
