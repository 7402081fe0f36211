"""Whose X-Forwarded-For counts: nobody's by default; with CHINWAG_TRUSTED_PROXIES, the listed proxies'."""

from __future__ import annotations

import httpx
import pytest

from chinwag.cli import uvicorn_options
from chinwag.config import Settings
from chinwag.middleware.client_address import TrustedProxies, parse_networks
from tests.conftest import ServerFactory

WRONG = {"email": "nobody@example.com", "password": "wrong-password"}


async def test_forwarded_for_from_an_untrusted_peer_cannot_dodge_the_address_limit(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(login_attempts_per_minute=3)  # no trusted proxies: the default
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
        for i in range(3):
            answer = await client.post("/auth/login", json=WRONG, headers={"X-Forwarded-For": f"203.0.113.{i}"})
            assert answer.status_code == 401
        answer = await client.post("/auth/login", json=WRONG, headers={"X-Forwarded-For": "203.0.113.77"})
    assert answer.status_code == 429


async def test_a_trusted_proxy_names_the_client(server_factory: ServerFactory) -> None:
    server = await server_factory(login_attempts_per_minute=3, trusted_proxies="10.9.0.0/16,127.0.0.1")
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30) as client:
        await client.post("/auth/register", json={"email": "owner@example.com", "password": "the-password"})
        for i in range(3):
            # The client wrote the left-most entry itself; the proxy appended the address it saw.
            hops = f"6.6.6.6, 198.51.100.{i}, 10.9.0.5"
            wrong = {"email": "owner@example.com", "password": "wrong"}
            answer = await client.post("/auth/login", json=wrong, headers={"X-Forwarded-For": hops})
            assert answer.status_code == 401  # three addresses, one failure each
        # The account is past its limit now: a wrong guess from a fresh address is 429, the owner still signs in.
        fresh = {"X-Forwarded-For": "192.0.2.50"}
        assert (await client.post("/auth/login", json=wrong, headers=fresh)).status_code == 429
        right = {"email": "owner@example.com", "password": "the-password"}
        assert (await client.post("/auth/login", json=right, headers=fresh)).status_code == 200
        # 198.51.100.0 failed once: two more failures and it waits, whatever it writes to the left.
        for _ in range(2):
            headers = {"X-Forwarded-For": "1.1.1.1, 198.51.100.0"}
            assert (await client.post("/auth/login", json=WRONG, headers=headers)).status_code == 401
        headers = {"X-Forwarded-For": "2.2.2.2, 198.51.100.0"}
        assert (await client.post("/auth/login", json=WRONG, headers=headers)).status_code == 429


def test_the_right_most_untrusted_hop_is_the_client() -> None:
    proxies = TrustedProxies(parse_networks(["10.0.0.0/8", "::1"]))
    assert proxies.client("10.0.0.1", "203.0.113.9") == "203.0.113.9"
    assert proxies.client("10.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.1.1") == "203.0.113.9"
    assert proxies.client("::1", "10.0.0.2, 10.0.0.3") == "10.0.0.2"  # only proxies: the first of them
    assert proxies.client("10.0.0.1", "not-an-address") == "10.0.0.1"
    assert proxies.client("10.0.0.1", "") == "10.0.0.1"
    assert not TrustedProxies(()).trusts("127.0.0.1")


def test_serve_tells_uvicorn_the_same_proxies() -> None:
    assert uvicorn_options(Settings(_env_file=None))["proxy_headers"] is False
    options = uvicorn_options(Settings(_env_file=None, trusted_proxies="10.0.0.0/8, 192.0.2.1"))
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == ["10.0.0.0/8", "192.0.2.1"]


def test_a_bad_proxy_is_a_clear_settings_error() -> None:
    from chinwag.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="CHINWAG_TRUSTED_PROXIES"):
        load_settings(_env_file=None, trusted_proxies="10.0.0.0/8,proxy.example.com")
