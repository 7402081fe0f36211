"""Rule 6: the server pings an idle chat socket at least every 25 s. Read with a bare socket, so that the pings are
seen (a WebSocket client library answers them out of sight)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct

from tests.conftest import RunningServer, UserFactory
from tests.routes.chat_support import new_session

PING = 0x9
TEXT = 0x1


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    opcode = head[0] & 0x0F
    length = head[1] & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return opcode, await reader.readexactly(length)


async def test_an_idle_socket_is_pinged_within_25_seconds(server: RunningServer, user_factory: UserFactory) -> None:
    user = await user_factory(server)
    session_id = await new_session(server, user)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws/chat/{session_id}?token={user.access_token} HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        opcode, payload = await read_frame(reader)
        assert opcode == TEXT
        assert b'"ready"' in payload
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(26):
            while True:
                opcode, _ = await read_frame(reader)
                if opcode == PING:
                    break
        assert loop.time() - started <= 25
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
