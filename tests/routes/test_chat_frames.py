"""Frames a client gets wrong at the WebSocket level: a frame over 1 MiB always closes with 1009 (a close frame the
client receives, never a dropped connection), a text frame that is not UTF-8 with 1007; each logs one warning line
and no traceback."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import struct
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory, UserFactory
from tests.routes.chat_support import Chat, new_session


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not any(r is record for r in self.records):  # a record may pass two of the loggers watched
            self.records.append(record)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """Every record from chinwag and uvicorn (whose loggers do not reach the root logger in tests)."""
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "chinwag")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def read_until_closed(ws: websockets.ClientConnection) -> None:
    async with asyncio.timeout(30):
        while True:
            await ws.recv()


async def closed_with(chat: Chat, frame: str | bytes, *, text: bool | None = None) -> int | None:
    async with websockets.connect(chat.url(), open_timeout=10, max_size=None) as ws:
        assert "ready" in str(await ws.recv())
        await ws.send(frame, text=text)
        with pytest.raises(ConnectionClosed) as closed:
            await read_until_closed(ws)
        # The close frame the server sent (None: the connection was dropped without one, 1006).
        return None if closed.value.rcvd is None else closed.value.rcvd.code


def noise(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.ERROR or r.exc_info]


async def test_an_oversize_frame_always_closes_with_1009(
    server_factory: ServerFactory, user_factory: UserFactory, logged: list[logging.LogRecord]
) -> None:
    server = await server_factory()
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    for size in (1024 * 1024 + 1, 4 * 1024 * 1024, 16 * 1024 * 1024):
        for _ in range(3):
            assert await closed_with(chat, "x" * size) == 1009
    assert noise(logged) == []
    warnings = [r for r in logged if r.levelno == logging.WARNING and "1009" in r.getMessage()]
    assert len(warnings) == 9


async def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_one_warning(
    server_factory: ServerFactory, user_factory: UserFactory, logged: list[logging.LogRecord]
) -> None:
    server = await server_factory()
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    assert await closed_with(chat, b'{"type": "ping", "x": "\xff\xfe"}', text=True) == 1007
    assert noise(logged) == []
    warnings = [r for r in logged if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "1007" in warnings[0].getMessage()


async def test_1009_reaches_a_client_that_keeps_sending_its_oversize_frame(
    server_factory: ServerFactory, user_factory: UserFactory
) -> None:
    """The server stops reading at the frame's header; the client is still writing the rest. Closing the TCP
    connection then would answer the rest with a reset, which destroys the close frame before the client reads it
    (1006). The server must read and drop the rest, so the close frame survives."""
    server = await server_factory()
    user = await user_factory(server)
    chat = Chat.on(server, user, await new_session(server, user))
    url = urlsplit(chat.url())
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(30):
            assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        # A masked text frame announcing 8 MiB, of which only a part is sent now.
        writer.write(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 8 * 1024 * 1024) + os.urandom(4))
        writer.write(os.urandom(256 * 1024))
        await writer.drain()
        await asyncio.sleep(1)  # the server has answered by now (not a timing assertion: only a pause)
        for _ in range(8):
            writer.write(os.urandom(256 * 1024))
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        data = b""
        async with asyncio.timeout(30):
            while chunk := await reader.read(65536):
                data += chunk
    finally:
        writer.close()
    close_at = data.find(bytes([0x88]))
    assert close_at >= 0, "no close frame came"
    assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == 1009
