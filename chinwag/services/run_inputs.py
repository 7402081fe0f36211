"""What a run reads before its model request, sent off with the claim of its run slot so that it takes no time of
its own on the way to the model request: the file context and the message's images, which do not depend on the
slot, and the Layer 1 history, which does: it is the run's only if the session row's version it was read at is the
one the claim took the slot over or the one it made (`ContextState.version`); otherwise the run reads it again.
The run awaits them.

```python
inputs = asyncio.create_task(read_run_inputs(deps, session=session, file_ids=file_ids, with_history=True))
...  # claim the slot; a refused claim settles the task
prepared = await inputs
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chinwag.db import context as context_db
from chinwag.schemas.sessions import Session
from chinwag.services.agent_builder import FILE_BUDGET_SHARE, RunDeps
from chinwag.services.file_context import FileContext, build_file_context
from chinwag.services.file_service import FileStore
from chinwag.services.images import ImageParts, image_files
from chinwag.services.postgres_session import PostgresSession

History = tuple[context_db.ContextState, list[context_db.ContextRow]]
"""The Layer 1 history as `PostgresSession.unsummarized` reads it."""


@dataclass(frozen=True, slots=True)
class RunInputs:
    """The file context of the run's instructions, and the images its message sends."""

    files: FileContext
    images: ImageParts
    image_parts: list[dict[str, Any]]
    """The message's own images, as the model gets them."""
    history: History | None = None
    """The Layer 1 history as read before the claim (when asked for): see `current_history`."""

    def current_history(self, claimed: tuple[str, str] | None) -> History | None:
        """The history read with the claim, if it is current for the run: read at the session row's version the
        claim took the slot over (nothing changed the session before the claim), or at the one the claim made (the
        read came after it). `claimed`: those two versions; None (a branch claim) is never current."""
        if self.history is None or claimed is None:
            return None
        state, _ = self.history
        return self.history if state.version is not None and state.version in claimed else None


async def read_run_inputs(
    deps: RunDeps, *, session: Session, file_ids: Sequence[str], with_history: bool = False
) -> RunInputs:
    """The file context, the message's images and (`with_history`) the Layer 1 history, read at once on separate
    pool connections."""
    catalog = deps.llm.catalog
    images = ImageParts(
        pool=deps.pool,
        store=FileStore.from_settings(deps.settings),
        session_id=session.id,
        vision=catalog.accepts_images(session.model),
    )
    files, image_parts, history = await asyncio.gather(
        build_file_context(
            pool=deps.pool,
            session_id=session.id,
            file_ids=file_ids,
            budget_tokens=int(catalog.context_window(session.model) * FILE_BUDGET_SHARE),
            counter=deps.llm.counter,
        ),
        _message_images(deps, images, session_id=session.id, file_ids=file_ids),
        PostgresSession(deps.pool, session.id, counter=deps.llm.counter).unsummarized() if with_history else _nothing(),
        return_exceptions=True,
    )
    if isinstance(files, BaseException):
        raise files
    if isinstance(image_parts, BaseException):
        raise image_parts
    if isinstance(history, BaseException):
        history = None  # the run reads it again, and meets the error there if it lasts
    return RunInputs(files=files, images=images, image_parts=image_parts, history=history)


async def _nothing() -> None:
    return None


async def _message_images(
    deps: RunDeps, images: ImageParts, *, session_id: str, file_ids: Sequence[str]
) -> list[dict[str, Any]]:
    if not file_ids or not images.vision:
        return []
    files = await image_files(deps.pool, session_id=session_id, file_ids=file_ids)
    return await images.message_parts(files)


async def settle(task: asyncio.Future[Any]) -> None:
    """Cancel `task` (a task or a future) if it still runs and wait for it to end; what it raised is dropped (its
    owner no longer needs its result). A cancellation of the caller itself still propagates."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: never reported as an exception nobody looked at
