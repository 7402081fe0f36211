"""`SessionService` on a real PostgreSQL: the ownership check other services use, the Layer 2 API's errors, the
model check, and deleting a session's file bytes through the file store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from chinwag.config import Settings
from chinwag.errors import BadRequest, NotFound
from chinwag.schemas.sessions import SessionUpdate
from chinwag.services.file_service import FileStore
from chinwag.services.session_service import SessionService


async def _user(pool: asyncpg.Pool) -> str:
    user_id: uuid.UUID = await pool.fetchval(
        "INSERT INTO users (email, password_hash, display_name) VALUES ($1, 'x', 'X') RETURNING id",
        f"{uuid.uuid4().hex}@example.com",
    )
    return str(user_id)


@pytest.fixture
def service_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(models="alpha:4000,beta")


async def test_get_and_check_owner_hide_other_users_sessions(
    app_pool: asyncpg.Pool, service_settings: Settings
) -> None:
    sessions = SessionService(app_pool, service_settings)
    owner, other = await _user(app_pool), await _user(app_pool)
    session = await sessions.create(user_id=owner, title="mine")
    assert session.model == "alpha"
    assert session.context.limit == 4000
    assert (await sessions.get(user_id=owner, session_id=session.id)) == session
    assert await sessions.check_owner(user_id=owner, session_id=session.id) == uuid.UUID(session.id)
    for user_id, session_id in [(other, session.id), (owner, str(uuid.uuid4())), (owner, "not-an-id")]:
        with pytest.raises(NotFound):
            await sessions.get(user_id=user_id, session_id=session_id)
        with pytest.raises(NotFound):
            await sessions.check_owner(user_id=user_id, session_id=session_id)
        with pytest.raises(NotFound):
            await sessions.update(user_id=user_id, session_id=session_id, update=SessionUpdate(title="x"))
        with pytest.raises(NotFound):
            await sessions.delete(user_id=user_id, session_id=session_id)
        with pytest.raises(NotFound):
            await sessions.messages_json(user_id=user_id, session_id=session_id)


async def test_models_must_be_offered(app_pool: asyncpg.Pool, service_settings: Settings) -> None:
    sessions = SessionService(app_pool, service_settings)
    user_id = await _user(app_pool)
    with pytest.raises(BadRequest):
        await sessions.create(user_id=user_id, model="gamma")
    session = await sessions.create(user_id=user_id, model="beta")
    with pytest.raises(BadRequest):
        await sessions.update(user_id=user_id, session_id=session.id, update=SessionUpdate(model="gamma"))
    moved = await sessions.update(user_id=user_id, session_id=session.id, update=SessionUpdate(model="alpha"))
    assert (moved.model, moved.context.limit) == ("alpha", 4000)


async def test_layer2_api_after_the_session_is_gone(app_pool: asyncpg.Pool, service_settings: Settings) -> None:
    sessions = SessionService(app_pool, service_settings)
    user_id = await _user(app_pool)
    session = await sessions.create(user_id=user_id)
    message = await sessions.append_message(session_id=session.id, role="user", content="hi", client_id="c-1")
    assert (message.seq, message.client_id) == (1, "c-1")
    await sessions.add_usage(session_id=session.id, input_tokens=7, output_tokens=3, context_tokens=12)
    after = await sessions.get(user_id=user_id, session_id=session.id)
    assert (after.message_count, after.usage.input_tokens, after.usage.output_tokens) == (1, 7, 3)
    assert after.context.tokens == 12

    await sessions.delete(user_id=user_id, session_id=session.id)
    with pytest.raises(NotFound):
        await sessions.append_message(session_id=session.id, role="assistant", content="too late")
    with pytest.raises(NotFound):
        await sessions.update_message(message_id=message.id, content="x", status="error")
    with pytest.raises(NotFound):
        await sessions.update_message(message_id="not-an-id", content="x", status="error")


async def test_delete_removes_the_files_bytes(
    app_pool: asyncpg.Pool, service_settings: Settings, tmp_path: Path
) -> None:
    store = FileStore(tmp_path / "files")
    sessions = SessionService(app_pool, service_settings, files=store)
    user_id = await _user(app_pool)
    session = await sessions.create(user_id=user_id)
    keep = await sessions.create(user_id=user_id)
    keys = []
    for sid in (session.id, keep.id):
        file_id = uuid.uuid4()
        key = FileStore.storage_key(uuid.UUID(sid), file_id)
        path = store.path_of_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")
        await app_pool.execute(
            "INSERT INTO files (id, session_id, name, size, content_type, sha256, storage_key)"
            " VALUES ($1, $2, 'a.txt', 5, 'text/plain', 'x', $3)",
            file_id,
            uuid.UUID(sid),
            key,
        )
        keys.append(key)
    await sessions.delete(user_id=user_id, session_id=session.id)
    assert not store.path_of_key(keys[0]).exists()
    assert not store.session_dir(session.id).exists()
    assert store.path_of_key(keys[1]).read_bytes() == b"bytes"  # another session's file stays
