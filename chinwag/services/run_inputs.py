"""What a run reads before its model request that does not depend on its run slot: the file context and the
message's images. `ChatService._start` starts these reads as the claim of the slot goes out, so they take no time
of their own on the way to the model request; the run awaits them.

```python
inputs = asyncio.create_task(read_run_inputs(deps, session=session, file_ids=file_ids))
...  # claim the slot; a refused claim settles the task
prepared = await inputs
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chinwag.schemas.sessions import Session
from chinwag.services.agent_builder import FILE_BUDGET_SHARE, RunDeps
from chinwag.services.file_context import FileContext, build_file_context
from chinwag.services.file_service import FileStore
from chinwag.services.images import ImageParts, image_files


@dataclass(frozen=True, slots=True)
class RunInputs:
    """The file context of the run's instructions, and the images its message sends."""

    files: FileContext
    images: ImageParts
    image_parts: list[dict[str, Any]]
    """The message's own images, as the model gets them."""


async def read_run_inputs(deps: RunDeps, *, session: Session, file_ids: Sequence[str]) -> RunInputs:
    """The file context and the message's images, read at once on separate pool connections."""
    catalog = deps.llm.catalog
    images = ImageParts(
        pool=deps.pool,
        store=FileStore.from_settings(deps.settings),
        session_id=session.id,
        vision=catalog.accepts_images(session.model),
    )
    files, image_parts = await asyncio.gather(
        build_file_context(
            pool=deps.pool,
            session_id=session.id,
            file_ids=file_ids,
            budget_tokens=int(catalog.context_window(session.model) * FILE_BUDGET_SHARE),
            counter=deps.llm.counter,
        ),
        _message_images(deps, images, session_id=session.id, file_ids=file_ids),
        return_exceptions=True,
    )
    if isinstance(files, BaseException):
        raise files
    if isinstance(image_parts, BaseException):
        raise image_parts
    return RunInputs(files=files, images=images, image_parts=image_parts)


async def _message_images(
    deps: RunDeps, images: ImageParts, *, session_id: str, file_ids: Sequence[str]
) -> list[dict[str, Any]]:
    if not file_ids or not images.vision:
        return []
    files = await image_files(deps.pool, session_id=session_id, file_ids=file_ids)
    return await images.message_parts(files)


async def settle(task: asyncio.Task[Any]) -> None:
    """Cancel `task` if it still runs and wait for it to end; what it raised is dropped (its owner no longer needs
    its result). A cancellation of the caller itself still propagates."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: never reported as an exception nobody looked at
