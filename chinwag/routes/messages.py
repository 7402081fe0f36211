"""`/sessions/{id}/messages`: the history the user saw (Layer 2), paged by `seq`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chinwag.dependencies import CurrentUser, Sessions
from chinwag.schemas.messages import HistoryQuery, MessagePage

router = APIRouter(prefix="/sessions", tags=["messages"])


@router.get("/{session_id}/messages")
async def list_messages(
    session_id: str, query: Annotated[HistoryQuery, Query()], user: CurrentUser, sessions: Sessions
) -> MessagePage:
    """A page of history, oldest first: before a seq, after a seq, or (neither) the newest page."""
    return await sessions.messages(
        user_id=user.id, session_id=session_id, limit=query.limit, before=query.before, after=query.after
    )
