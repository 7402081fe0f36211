"""Liveness and readiness, outside the API prefix and without auth."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from chinwag.dependencies import Pool

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(pool: Pool) -> JSONResponse:
    """The database answers; 503 while it does not."""
    body: dict[str, Any] = {"status": "ok", "database": "ok"}
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception:
        body.update(status="unavailable", database="unreachable")
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)
