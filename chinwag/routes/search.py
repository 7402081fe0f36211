"""`/search`: full-text search over the user's own messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from chinwag.dependencies import CurrentUser, Sessions
from chinwag.errors import error_responses
from chinwag.schemas.messages import SearchResults
from chinwag.schemas.sessions import SafeText

router = APIRouter(prefix="/search", tags=["search"], responses=error_responses(401))


@router.get("")
async def search(
    user: CurrentUser,
    sessions: Sessions,
    q: Annotated[SafeText, Query(min_length=1, max_length=1000, pattern=r"\S", description="words to find")],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchResults:
    """Messages of the user's sessions matching `q`, best match first."""
    return await sessions.search(user_id=user.id, query=q, limit=limit)
