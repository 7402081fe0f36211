"""AuthService against a real database, the password hashing, and the in-process rate limiter."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import jwt
import pytest
from argon2 import PasswordHasher

from chinwag.config import Settings
from chinwag.errors import AccountDisabled, Conflict, InvalidCredentials, InvalidToken, NotFound, RateLimited
from chinwag.services.auth_service import AuthService, PasswordHashing
from chinwag.services.rate_limit import InMemoryRateLimiter, retry_after_seconds

SECRET = "service-test-secret-" + "z" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- rate limiter ---


async def test_limiter_allows_the_limit_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(clock=clock)
    for _ in range(3):
        assert await limiter.acquire("k", limit=3, window_s=60) == 0
        clock.now += 10
    assert await limiter.acquire("k", limit=3, window_s=60) == pytest.approx(30)
    assert await limiter.acquire("other", limit=3, window_s=60) == 0  # keys are independent
    clock.now += 30  # the first hit leaves the window
    assert await limiter.acquire("k", limit=3, window_s=60) == 0
    assert await limiter.acquire("k", limit=3, window_s=60) > 0


async def test_limiter_refusals_do_not_count() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(clock=clock)
    assert await limiter.acquire("k", limit=1, window_s=60) == 0
    for _ in range(5):
        clock.now += 10
        assert await limiter.acquire("k", limit=1, window_s=60) > 0
    clock.now += 11  # 61 s after the only recorded hit
    assert await limiter.acquire("k", limit=1, window_s=60) == 0


async def test_limiter_release_gives_a_slot_back() -> None:
    limiter = InMemoryRateLimiter(clock=Clock())
    assert await limiter.acquire("k", limit=1, window_s=60) == 0
    await limiter.release("k")
    assert await limiter.acquire("k", limit=1, window_s=60) == 0
    await limiter.release("never-seen")  # harmless


async def test_limiter_forgets_idle_keys() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(clock=clock, sweep_every=10)
    for i in range(9):
        await limiter.acquire(f"addr-{i}", limit=5, window_s=60)
    clock.now += 61
    await limiter.acquire("fresh", limit=5, window_s=60)  # the 10th call sweeps
    assert set(limiter._hits) == {"fresh"}


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_seconds(0.001) == 1
    assert retry_after_seconds(1.2) == 2
    assert retry_after_seconds(59.0) == 59


# --- passwords ---


async def test_passwords_are_argon2id_and_verified() -> None:
    passwords = PasswordHashing()
    hashed = await passwords.hash("correct horse")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "correct horse")
    assert not await passwords.verify(hashed, "wrong horse")
    assert not await passwords.verify(None, "anything")  # unknown user: checked against a dummy hash
    assert not await passwords.verify("not-a-hash", "anything")


async def test_hashing_does_not_block_the_event_loop() -> None:
    passwords = PasswordHashing()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        await passwords.hash("some password")
    finally:
        task.cancel()
    assert ticks >= 3


# --- the service on a real database ---


@pytest.fixture
async def pool(db: asyncpg.Connection, database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_dsn, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def make_service(pool: asyncpg.Pool, settings_factory: Callable[..., Settings]) -> Callable[..., AuthService]:
    def make(**overrides: object) -> AuthService:
        return AuthService(
            pool=pool, settings=settings_factory(**overrides), secret=SECRET, limiter=InMemoryRateLimiter()
        )

    return make


async def test_access_token_claims(make_service: Callable[..., AuthService]) -> None:
    auth = make_service(access_token_ttl_s=120)
    user = await auth.register(email="kim@example.com", password="password-1", display_name=None)
    tokens = await auth.login(email="KIM@example.com", password="password-1", client="10.0.0.1")
    claims = jwt.decode(tokens.access_token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == user.id
    assert claims["typ"] == "access"
    assert claims["exp"] - claims["iat"] == 120
    assert tokens.expires_in == 120
    assert (await auth.authenticate(tokens.access_token)).id == user.id


async def test_a_verified_access_token_still_expires_and_its_account_is_still_checked(
    make_service: Callable[..., AuthService], db: asyncpg.Connection
) -> None:
    """Access tokens are decoded once and remembered: a remembered token is still refused once it expires, and
    its account is still read every time (a disabled account is refused at once)."""
    auth = make_service()
    user = await auth.register(email="ida@example.com", password="password-1", display_name=None)
    now = int(time.time())
    claims = {"sub": user.id, "typ": "access", "iat": now, "exp": now + 2}
    short = jwt.encode(claims, SECRET, algorithm="HS256")
    assert (await auth.authenticate(short)).id == user.id
    assert (await auth.authenticate(short)).id == user.id  # remembered
    forged = jwt.encode(claims, "another secret of thirty-two bytes!", algorithm="HS256")
    with pytest.raises(InvalidToken, match="invalid"):
        await auth.authenticate(forged)
    while time.time() < now + 2:
        await asyncio.sleep(0.1)
    with pytest.raises(InvalidToken, match="expired"):
        await auth.authenticate(short)
    with pytest.raises(InvalidToken, match="expired"):
        await auth.authenticate(short)  # and forgotten: decoded again, still expired

    lasting = jwt.encode({**claims, "exp": now + 600}, SECRET, algorithm="HS256")
    assert (await auth.authenticate(lasting)).id == user.id
    await db.execute("UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(user.id))
    with pytest.raises(AccountDisabled):
        await auth.authenticate(lasting)


async def test_login_refusals(make_service: Callable[..., AuthService]) -> None:
    auth = make_service(login_attempts_per_minute=2)
    await auth.register(email="lee@example.com", password="password-1", display_name="Lee")
    with pytest.raises(InvalidCredentials):
        await auth.login(email="lee@example.com", password="password-2", client=None)
    with pytest.raises(InvalidCredentials):
        await auth.login(email="lee@example.com", password="password-2", client=None)
    with pytest.raises(RateLimited) as limited:
        await auth.login(email="lee@example.com", password="password-2", client=None)
    assert (await auth.login(email="lee@example.com", password="password-1", client=None)).user.display_name == "Lee"
    assert limited.value.headers is not None
    assert 1 <= int(limited.value.headers["Retry-After"]) <= 60


async def test_weak_hashes_are_upgraded_at_login(
    make_service: Callable[..., AuthService], db: asyncpg.Connection
) -> None:
    auth = make_service(password_hash_time_cost=2, password_hash_memory_kib=2048)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("old-password")
    await db.execute(
        "INSERT INTO users (email, password_hash, display_name) VALUES ('old@example.com', $1, 'Old')", weak
    )
    await auth.login(email="old@example.com", password="old-password", client=None)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE email = 'old@example.com'")
    assert stored != weak
    assert not PasswordHasher(time_cost=2, memory_cost=2048).check_needs_rehash(stored)
    await auth.login(email="old@example.com", password="old-password", client=None)


async def test_create_user_ignores_the_registration_mode(make_service: Callable[..., AuthService]) -> None:
    auth = make_service(registration="closed")
    admin = await auth.create_user(email="ops@example.com", password="password-1", admin=True)
    assert admin.role == "admin"
    assert admin.display_name == "ops"
    with pytest.raises(Conflict):
        await auth.create_user(email="ops@example.com", password="password-2")


async def test_refresh_rotation_and_reuse(make_service: Callable[..., AuthService], db: asyncpg.Connection) -> None:
    auth = make_service()
    await auth.register(email="max@example.com", password="password-1", display_name=None)
    first = await auth.login(email="max@example.com", password="password-1", client=None)
    second = await auth.refresh(refresh_token=first.refresh_token)
    assert await db.fetchval("SELECT count(DISTINCT family_id) FROM refresh_tokens") == 1
    # Only hashes are stored.
    assert (
        await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE token_hash = $1", second.refresh_token.encode())
        == 0
    )
    with pytest.raises(InvalidToken):
        await auth.refresh(refresh_token=first.refresh_token)
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL") == 0
    with pytest.raises(InvalidToken):
        await auth.refresh(refresh_token=second.refresh_token)


async def test_api_keys_are_stored_hashed(make_service: Callable[..., AuthService], db: asyncpg.Connection) -> None:
    auth = make_service()
    user = await auth.register(email="nia@example.com", password="password-1", display_name=None)
    created = await auth.create_api_key(user=user, name="ci")
    assert created.key.startswith("cw_")
    stored = await db.fetchval("SELECT key_hash FROM api_keys")
    assert created.key.encode() not in stored
    assert (await auth.authenticate(created.key)).id == user.id
    await auth.delete_api_key(user=user, key_id=created.id)
    with pytest.raises(InvalidToken):
        await auth.authenticate(created.key)
    with pytest.raises(NotFound):
        await auth.delete_api_key(user=user, key_id=str(uuid.uuid4()))


# --- login limits: failures only, never a lock-out of the owner ---


async def test_other_clients_failures_never_refuse_the_right_password(make_service: Callable[..., AuthService]) -> None:
    auth = make_service(login_attempts_per_minute=3)
    await auth.register(email="owner@example.com", password="the-password", display_name=None)
    for i in range(20):  # an attacker on many addresses
        with pytest.raises((InvalidCredentials, RateLimited)):
            await auth.login(email="owner@example.com", password=f"guess-{i}", client=f"203.0.113.{i}")
    tokens = await auth.login(email="owner@example.com", password="the-password", client="198.51.100.7")
    assert tokens.user.email == "owner@example.com"


async def test_a_wrong_guess_past_the_accounts_limit_is_rate_limited(make_service: Callable[..., AuthService]) -> None:
    auth = make_service(login_attempts_per_minute=3)
    await auth.register(email="target@example.com", password="the-password", display_name=None)
    for i in range(3):
        with pytest.raises(InvalidCredentials):
            await auth.login(email="target@example.com", password="wrong", client=f"203.0.113.{i}")
    with pytest.raises(RateLimited) as limited:
        await auth.login(email="target@example.com", password="wrong", client="203.0.113.99")
    assert limited.value.retry_after >= 1


async def test_an_address_past_its_own_failures_waits_and_successes_never_count(
    make_service: Callable[..., AuthService],
) -> None:
    auth = make_service(login_attempts_per_minute=3)
    await auth.register(email="user@example.com", password="the-password", display_name=None)
    for _ in range(10):
        await auth.login(email="user@example.com", password="the-password", client="192.0.2.1")
    for i in range(3):
        with pytest.raises(InvalidCredentials):
            await auth.login(email=f"nobody{i}@example.com", password="wrong", client="192.0.2.1")
    with pytest.raises(RateLimited):
        await auth.login(email="user@example.com", password="the-password", client="192.0.2.1")
    # Those failures were this address's: the account itself is not held back elsewhere.
    await auth.login(email="user@example.com", password="the-password", client="192.0.2.2")
