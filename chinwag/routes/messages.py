"""`/sessions/{id}/messages`: the history the user saw (Layer 2), paged by `seq`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError

from chinwag.dependencies import CurrentUser, Sessions
from chinwag.errors import error_responses
from chinwag.schemas.messages import MAX_SEQ, MessagePage

router = APIRouter(prefix="/sessions", tags=["messages"], responses=error_responses(401, 404))


@router.get("/{session_id}/messages", response_model=MessagePage)
async def list_messages(
    session_id: str,
    user: CurrentUser,
    sessions: Sessions,
    limit: Annotated[int, Query(ge=1, le=100, description="page size, 1-100")] = 50,
    before: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="older than this seq (excluded)")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="newer than this seq (excluded)")] = None,
) -> Response:
    """A page of history, oldest first: before a seq, after a seq, or (neither) the newest page."""
    # Plain query parameters rather than a query model: the model costs ~0.3 ms of CPU per request here.
    if before is not None and after is not None:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "after"), "msg": "pass either before or after, not both"}]
        )
    # The busiest REST route: the page comes back as JSON bytes, encoded once (see MessagePage.encode_records).
    page = await sessions.messages_json(user_id=user.id, session_id=session_id, limit=limit, before=before, after=after)
    return Response(page, media_type="application/json")
