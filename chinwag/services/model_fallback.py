"""A session whose model the operator has since removed from `CHINWAG_MODELS` runs on the default model instead,
and says so: the session is updated (so the REST view and the next run agree) and every socket of it gets
`session_updated`. Without this, each of its runs would fail at the provider with an unknown model."""

from __future__ import annotations

import logging

from chinwag.schemas.sessions import Session, SessionUpdate
from chinwag.services.agent_builder import RunDeps
from chinwag.services.session_service import SessionService
from chinwag.websocket.bus import Envelope
from chinwag.websocket.events import SessionUpdated, encode

logger = logging.getLogger(__name__)


async def with_offered_model(deps: RunDeps, sessions: SessionService, session: Session, *, user_id: str) -> Session:
    """`session`, moved to the default model first if its own is no longer offered."""
    settings = deps.settings
    if session.model in settings.model_ids:
        return session
    default = settings.resolved_default_model
    logger.info("session %s: model %r is no longer offered; using %r", session.id, session.model, default)
    updated = await sessions.update(user_id=user_id, session_id=session.id, update=SessionUpdate(model=default))
    await deps.bus.publish(Envelope(session_id=session.id, frame=encode(SessionUpdated(session=updated))))
    return updated
