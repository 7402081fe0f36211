"""`AdminService` on a real PostgreSQL: the last-admin rule holds when two changes race at the database."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from argon2 import PasswordHasher

from chinwag.db import users as users_db
from chinwag.errors import Conflict
from chinwag.services.admin_service import AdminService
from chinwag.services.auth_service import PasswordHashing
from chinwag.services.file_service import FileStore


@pytest.fixture
def admin(app_pool: asyncpg.Pool, tmp_path: Path) -> AdminService:
    passwords = PasswordHashing(PasswordHasher(time_cost=1, memory_cost=1024))
    return AdminService(pool=app_pool, passwords=passwords, files=FileStore(tmp_path / "files"))


async def make_admin(conn: asyncpg.Connection, email: str) -> str:
    user = await users_db.insert_user(conn, email=email, password_hash="x", display_name=email, role="admin")
    return user.id


@pytest.mark.parametrize("change", ["demote", "disable", "delete"])
async def test_a_change_waits_for_a_concurrent_one_and_then_sees_it(
    admin: AdminService, app_pool: asyncpg.Pool, db: asyncpg.Connection, change: str
) -> None:
    first, second = await make_admin(db, "first@example.com"), await make_admin(db, "second@example.com")
    async with app_pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        # What `update_user` does to demote `second`, held open in the middle.
        assert await users_db.lock_active_admins(conn) == {uuid.UUID(first), uuid.UUID(second)}
        await conn.execute("UPDATE users SET role = 'user' WHERE id = $1", uuid.UUID(second))

        async def attempt() -> None:
            if change == "demote":
                await admin.update_user(user_id=first, role="user")
            elif change == "disable":
                await admin.update_user(user_id=first, disabled=True)
            else:
                await admin.delete_user(user_id=first)

        racing = asyncio.create_task(attempt())
        await asyncio.sleep(0.5)
        assert not racing.done(), "the second change must wait for the admin rows the first one holds"
        await tx.commit()
    with pytest.raises(Conflict):
        await racing
    assert await db.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND NOT disabled") == 1


async def test_with_another_active_admin_each_change_goes_through(admin: AdminService, db: asyncpg.Connection) -> None:
    first = await make_admin(db, "first@example.com")
    await make_admin(db, "second@example.com")
    third = await make_admin(db, "third@example.com")
    assert (await admin.update_user(user_id=first, role="user")).role == "user"
    assert (await admin.update_user(user_id=third, disabled=True)).disabled is True
    with pytest.raises(Conflict):
        await admin.update_user(user_id=await admin.id_of("SECOND@example.com"), disabled=True)
    await admin.update_user(user_id=third, disabled=False)
    await admin.delete_user(user_id=third)
    assert [u.email for u in (await admin.list_users()).items] == ["first@example.com", "second@example.com"]
