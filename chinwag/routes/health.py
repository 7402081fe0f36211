"""Liveness and readiness, outside the API prefix and without auth."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from chinwag.dependencies import AppSettings, Mcp, Pool

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    """What `/health/ready` answers, 200 or 503 alike."""

    status: str
    database: str
    model_provider: str
    """`ok`, or `not_configured: <what to set>` (chats answer `llm_error`; the server is still ready)."""
    mcp_servers: list[dict[str, Any]]


@router.get(
    "/ready",
    response_model=None,
    responses={
        200: {"model": Readiness},
        503: {"model": Readiness, "description": "The database is unreachable, or the server is draining"},
    },
)
async def ready(request: Request, pool: Pool, mcp: Mcp, settings: AppSettings) -> JSONResponse:
    """The database answers (503 while it does not); the model provider's and each MCP server's state, which never
    make the server unready (a server without a model still serves history, files and accounts)."""
    problem = settings.model_problem
    body: dict[str, Any] = {
        "status": "ok",
        "database": "ok",
        "model_provider": "ok" if problem is None else f"not_configured: {problem}",
        "mcp_servers": [
            {"name": s.name, "status": s.status, "tools": list(s.tools), "error": s.error} for s in mcp.status()
        ],
    }
    if request.app.state.drain.draining:
        # Restarting (SIGTERM): a load balancer sends new work elsewhere while runs here finish.
        body.update(status="draining")
        return JSONResponse(body, status_code=503)
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception:
        body.update(status="unavailable", database="unreachable")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
