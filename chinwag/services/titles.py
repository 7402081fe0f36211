"""A session's title, asked of the model after its first exchange; the start of the first message when the model
gives none. A failure here never fails the run that asked."""

from __future__ import annotations

import asyncio
import logging

import openai

from chinwag.schemas.sessions import SessionUpdate
from chinwag.services.agent_builder import RunDeps
from chinwag.services.run_events import provider_message
from chinwag.services.session_service import SessionService
from chinwag.websocket.bus import Envelope
from chinwag.websocket.events import SessionUpdated, encode

logger = logging.getLogger(__name__)

TITLE_INSTRUCTIONS = (
    "Write a short title (at most six words) for the conversation below. Answer with the title only: no quotes,"
    " no punctuation at the end."
)
TITLE_TIMEOUT_S = 30.0
TITLE_MAX_TOKENS = 20
"""A title is a few words: a model that rambles is cut here (and a slow one is not waited on for a paragraph)."""
TITLE_MAX_WORDS = 8
TITLE_MAX_CHARS = 80
TITLE_EXCERPT_CHARS = 2000


async def name_session(
    deps: RunDeps, sessions: SessionService, *, user_id: str, session_id: str, model: str, question: str, answer: str
) -> None:
    """Give an untitled session a title from its first exchange, and tell its sockets (`session_updated`)."""
    try:
        current = await sessions.get(user_id=user_id, session_id=session_id)
        if current.title:
            return
        title = await _ask_title(deps, session_id=session_id, model=model, question=question, answer=answer)
        title = title or fallback_title(question)
        if not title:
            return
        current = await sessions.get(user_id=user_id, session_id=session_id)
        if current.title:
            return  # renamed by the user meanwhile: theirs wins
        updated = await sessions.update(user_id=user_id, session_id=session_id, update=SessionUpdate(title=title))
        await deps.bus.publish(Envelope(session_id=session_id, frame=encode(SessionUpdated(session=updated))))
    except Exception as exc:
        logger.warning("no title for session %s: %r", session_id, exc)


async def _ask_title(deps: RunDeps, *, session_id: str, model: str, question: str, answer: str) -> str:
    """The model's title, cleaned; empty when it gave none (an error, a timeout, an empty answer)."""
    try:
        async with asyncio.timeout(TITLE_TIMEOUT_S):
            raw = await deps.llm.complete(
                model=model,
                instructions=TITLE_INSTRUCTIONS,
                prompt=title_prompt(question, answer),
                max_tokens=TITLE_MAX_TOKENS,
            )
    except Exception as exc:
        reason = (provider_message(exc) if isinstance(exc, openai.APIStatusError) else "") or repr(exc)
        logger.warning("no title from the model for session %s: %s", session_id, reason)
        return ""
    return clean_title(raw)


def title_prompt(user_text: str, answer: str) -> str:
    return f"User: {user_text[:TITLE_EXCERPT_CHARS]}\n\nAssistant: {answer[:TITLE_EXCERPT_CHARS]}"


def clean_title(raw: str) -> str:
    """A model's answer as a title: its first non-empty line, without a `Title:` label, quotes, Markdown emphasis
    or trailing punctuation, at most `TITLE_MAX_WORDS` words."""
    line = next((ln for ln in raw.splitlines() if ln.strip(" \t\"'`*#")), "")
    title = " ".join(line.split()).strip("\"'`*#").strip()
    if title.lower().startswith("title:"):
        title = title[6:].strip().strip("\"'`*#").strip()
    title = title.rstrip(".!?,;:").strip("\"'`*#").strip()
    return _bounded(title)


def fallback_title(user_text: str) -> str:
    """The session's title when the model gave none: the start of the user's first message."""
    return _bounded(" ".join(user_text.split()))


def _bounded(title: str) -> str:
    words = title.split()
    if len(words) > TITLE_MAX_WORDS:
        title = " ".join(words[:TITLE_MAX_WORDS]).rstrip(".!?,;:") + "…"
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rstrip() + "…"
    return title
