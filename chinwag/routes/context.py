"""`/sessions/{id}/context`: the model's view of a session (Layer 1)."""

from __future__ import annotations

from fastapi import APIRouter

from chinwag.dependencies import CurrentUser, Llm, Pool
from chinwag.errors import error_responses
from chinwag.schemas.context import SessionContext
from chinwag.services.token_aware_session import session_context

router = APIRouter(prefix="/sessions", tags=["sessions"], responses=error_responses(401, 404))


@router.get("/{session_id}/context")
async def get_context(session_id: str, user: CurrentUser, pool: Pool, llm: Llm) -> SessionContext:
    """What the model sees next turn: the fitted history (summary first, then whole turns), its size and the window."""
    view = await session_context(
        pool,
        user_id=user.id,
        session_id=session_id,
        context_window=llm.catalog.context_window,
        counter_for=lambda _model: llm.counter,  # the counter the runs use, so the numbers agree
    )
    return SessionContext(
        tokens=view.tokens,
        limit=view.limit,
        items=view.items,
        summarized_through_seq=view.summarized_through_seq,
        summary=view.summary,
    )
