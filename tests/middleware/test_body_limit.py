"""The body cap over real HTTP: a body past CHINWAG_MAX_BODY_BYTES is refused as it streams in (and at once when
Content-Length says so), and a request that will be refused for want of a credential never has its body read."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import orjson

from tests.conftest import RunningServer, ServerFactory, UserFactory

CAP = 4096


async def raw_request(
    server: RunningServer, head: str, body_parts: tuple[bytes, ...] = ()
) -> tuple[int, dict[str, str]]:
    """Send a request head (and these body bytes, and no more), then read the answer's status and JSON body.
    The server must answer without waiting for the rest of the body: the read waits up to 30 s."""
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in body_parts:
            writer.write(part)
        await writer.drain()
        async with asyncio.timeout(30):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    answer: dict[str, str] = orjson.loads(body)
    return int(status_line.split()[1]), answer


async def test_a_content_length_past_the_cap_is_refused_before_the_body_is_sent(server_factory: ServerFactory) -> None:
    server = await server_factory(max_body_bytes=CAP)
    head = (
        "POST /api/v1/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Content-Length: {200 * 1024 * 1024}\n"
    )
    status, body = await raw_request(server, head)
    assert status == 413
    assert body["code"] == "too_large"


async def test_a_chunked_body_is_refused_once_it_passes_the_cap(server_factory: ServerFactory) -> None:
    server = await server_factory(max_body_bytes=CAP)
    head = "POST /api/v1/auth/login HTTP/1.1\nHost: x\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    chunk = b"x" * 1024
    # Past the cap, and never the last chunk: only counting as it arrives can answer this.
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(CAP // len(chunk) + 2)]
    status, body = await raw_request(server, head, tuple(parts))
    assert status == 413
    assert body["code"] == "too_large"


async def test_a_protected_route_answers_401_without_reading_the_body(server_factory: ServerFactory) -> None:
    server = await server_factory(max_body_bytes=CAP)
    for auth in ("", "Authorization: Bearer not-a-token\n"):
        # A body within the cap that never comes: a server reading it would wait forever.
        head = f"POST /api/v1/sessions HTTP/1.1\nHost: x\nContent-Type: application/json\n{auth}Content-Length: 1000\n"
        status, body = await raw_request(server, head)
        assert status == 401
        assert body["code"] in ("unauthorized", "invalid_token")
        # Past the cap too: still the 401, the caller's real problem.
        head = (
            f"POST /api/v1/sessions HTTP/1.1\nHost: x\nContent-Type: application/json\n{auth}Content-Length: 9999999\n"
        )
        status, body = await raw_request(server, head)
        assert status == 401


async def test_bodies_within_the_cap_work_and_uploads_keep_their_own_cap(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    server = await server_factory(max_body_bytes=CAP, max_upload_bytes=64 * 1024)
    user = await user_factory(server)
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=30) as client:
        created = await client.post("/sessions", json={"title": "t" * 200, "instructions": "i" * (CAP - 500)})
        assert created.status_code == 201, created.text
        too_big = await client.post("/sessions", json={"instructions": "i" * (CAP + 10)})
        assert too_big.status_code == 413
        assert too_big.json()["code"] == "too_large"
        session_id = created.json()["id"]
        upload = await client.post(
            f"/sessions/{session_id}/files", files={"file": ("big.txt", b"word " * (CAP // 2), "text/plain")}
        )
        assert upload.status_code == 201, upload.text
