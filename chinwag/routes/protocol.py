"""The chat socket's description, for client authors and their tools (no auth): `GET /api/v1/schema/websocket`
(JSON Schema 2020-12 of every frame) and `GET /asyncapi.json` (AsyncAPI 3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from chinwag.errors import error_responses
from chinwag.websocket.published import asyncapi_document, websocket_schema

router = APIRouter(tags=["schema"], responses=error_responses())


@router.get(
    "/api/v1/schema/websocket",
    response_class=JSONResponse,
    responses={200: {"description": "A JSON Schema (2020-12) document", "content": {"application/schema+json": {}}}},
)
async def websocket_frames_schema() -> JSONResponse:
    """Every frame of `/ws/chat/{session_id}`: `$defs.ClientFrame` (sent by a client), `$defs.ServerFrame` (sent
    by the server), each a `oneOf` told apart by `type`."""
    return JSONResponse(websocket_schema(), media_type="application/schema+json")


@router.get("/asyncapi.json", responses={200: {"description": "An AsyncAPI 3.0 document"}})
async def asyncapi() -> dict[str, Any]:
    """The chat socket as an AsyncAPI 3 document (one channel, one message per frame type)."""
    return asyncapi_document()
