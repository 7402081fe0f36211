"""`/sessions/{id}/branch`: which branch of a conversation is active."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from chinwag.dependencies import CurrentUser, EventBus, Llm, Pool
from chinwag.errors import error_responses
from chinwag.schemas.messages import MAX_SEQ
from chinwag.schemas.sessions import Session
from chinwag.services.branches import switch_branch

router = APIRouter(prefix="/sessions", tags=["sessions"], responses=error_responses(401, 404, 409))


class BranchSelect(BaseModel):
    """The body of `POST /sessions/{id}/branch`."""

    model_config = ConfigDict(extra="forbid")

    seq: Annotated[int, Field(ge=1, le=MAX_SEQ, description="a message of the branch to show")]


@router.post("/{session_id}/branch")
async def select_branch(
    session_id: str, body: BranchSelect, user: CurrentUser, pool: Pool, bus: EventBus, llm: Llm
) -> Session:
    """Make the branch through message `seq` active, down to its newest leaf (409 `busy` during a run)."""
    return await switch_branch(
        pool,
        bus,
        user_id=user.id,
        session_id=session_id,
        seq=body.seq,
        window=llm.catalog.context_window,
        counter_for=lambda _model: llm.counter,
    )
