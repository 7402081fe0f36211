"""The reads a run sends off with its claim: its Layer 1 history is its own only at the claimed session version."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from chinwag.config import Settings
from chinwag.db.context import ContextRow, ContextState
from chinwag.services.file_context import FileContext
from chinwag.services.file_service import FileStore
from chinwag.services.images import ImageParts
from chinwag.services.run_inputs import History, RunInputs, settle


def _make(history: History | None, pool: asyncpg.Pool, settings: Settings) -> RunInputs:
    images = ImageParts(pool=pool, store=FileStore.from_settings(settings), session_id="s", vision=False)
    return RunInputs(files=FileContext(), images=images, image_parts=[], history=history)


def _history(version: str | None) -> History:
    state = ContextState(model="m", summary=None, summarized_through_seq=None, context_tokens=0, version=version)
    return state, [ContextRow(1, {"role": "user", "content": "hi"}, 1, 1)]


def test_the_history_read_before_the_claim_is_used_only_at_the_claimed_version(
    app_pool: asyncpg.Pool, settings: Settings
) -> None:
    def _inputs(history: History | None) -> RunInputs:
        return _make(history, app_pool, settings)

    read = _history("1234")
    assert _inputs(read).current_history(("1234", "1250")) is read  # read before the claim, nothing between
    assert _inputs(read).current_history(("1200", "1234")) is read  # read after the claim, which made 1234
    assert _inputs(read).current_history(("1240", "1250")) is None  # the session changed between read and claim
    assert _inputs(read).current_history(None) is None  # a branch claim: the branch moved, read again
    assert _inputs(None).current_history(("1234", "1250")) is None  # not read (or its read failed)
    assert _inputs(_history(None)).current_history(("1234", "1250")) is None  # a read without the version


async def test_settle_cancels_what_still_runs_and_swallows_what_it_raised() -> None:
    never = asyncio.Event()
    waiting = asyncio.create_task(never.wait())
    await settle(waiting)
    assert waiting.cancelled()

    async def fail() -> None:
        raise RuntimeError("the read failed")

    failed = asyncio.create_task(fail())
    await asyncio.sleep(0)
    await settle(failed)  # no "exception was never retrieved" later
    assert isinstance(failed.exception(), RuntimeError)

    async def outer() -> None:
        await settle(asyncio.create_task(never.wait()))

    task = asyncio.create_task(outer())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
