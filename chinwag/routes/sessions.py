"""`/sessions`: a user's chat sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from chinwag.dependencies import Chat, CurrentUser, Sessions
from chinwag.errors import error_responses
from chinwag.schemas.sessions import Session, SessionCreate, SessionPage, SessionUpdate

router = APIRouter(prefix="/sessions", tags=["sessions"], responses=error_responses(401, 404, 409))

PageLimit = Annotated[int, Query(ge=1, le=100, description="page size, 1-100")]


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_session(body: SessionCreate, user: CurrentUser, sessions: Sessions) -> Session:
    """Start a new session (model: the server's default unless given)."""
    return await sessions.create(
        user_id=user.id,
        title=body.title,
        model=body.model,
        instructions=body.instructions,
        mcp_servers=body.mcp_servers,
        settings=body.settings,
    )


@router.get("")
async def list_sessions(
    user: CurrentUser,
    sessions: Sessions,
    limit: PageLimit = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> SessionPage:
    """The user's sessions: pinned first, then most recently active."""
    return await sessions.list(user_id=user.id, limit=limit, cursor=cursor)


@router.get("/{session_id}")
async def get_session(session_id: str, user: CurrentUser, sessions: Sessions) -> Session:
    """One session."""
    return await sessions.get(user_id=user.id, session_id=session_id)


@router.patch("/{session_id}")
async def update_session(session_id: str, body: SessionUpdate, user: CurrentUser, sessions: Sessions) -> Session:
    """Change a session's title, pin, model, instructions or MCP servers; absent fields stay as they are."""
    return await sessions.update(user_id=user.id, session_id=session_id, update=body)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_session(session_id: str, user: CurrentUser, sessions: Sessions, chat: Chat) -> None:
    """Delete a session with its messages, context and files (a run in it is interrupted first)."""
    await chat.delete_session(sessions, user_id=user.id, session_id=session_id)
