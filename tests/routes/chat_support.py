"""Helpers of the chat socket tests: a signed-in user with a session on a server talking to the fake model, and a
small WebSocket client that reads frames with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from chinwag.websocket.events import validate_server_frame
from tests.conftest import RunningServer, TestUser


@dataclass
class Chat:
    """A user, one of their sessions, and the server both live on (`server` None: another process at `base_url`)."""

    base_url: str
    user: TestUser
    session_id: str
    server: RunningServer | None = None

    @classmethod
    def on(cls, server: RunningServer, user: TestUser, session_id: str) -> Chat:
        return cls(base_url=server.url, user=user, session_id=session_id, server=server)

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("http://", "ws://", 1)

    @property
    def running(self) -> RunningServer:
        assert self.server is not None
        return self.server

    def url(self, *, token: str | None = None, session_id: str | None = None) -> str:
        token = self.user.access_token if token is None else token
        return f"{self.ws_base}/ws/chat/{session_id or self.session_id}?token={token}"

    async def history(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url + "/api/v1", headers=self.user.headers, timeout=60) as c:
            answer = await c.get(f"/sessions/{self.session_id}/messages", params={"limit": 100})
            assert answer.status_code == 200, answer.text
            items: list[dict[str, Any]] = answer.json()["items"]
            return items

    async def session(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.base_url + "/api/v1", headers=self.user.headers, timeout=60) as c:
            answer = await c.get(f"/sessions/{self.session_id}")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body


async def new_session(server: RunningServer, user: TestUser, **body: Any) -> str:
    async with httpx.AsyncClient(base_url=server.url + "/api/v1", headers=user.headers, timeout=60) as c:
        answer = await c.post("/sessions", json={"title": "test", **body})
        assert answer.status_code == 201, answer.text
        session_id: str = answer.json()["id"]
        return session_id


class Socket:
    """A chat socket: `recv()` parses and checks each frame against the published schema."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ready: dict[str, Any] = {}

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            await self.ws.send(orjson.dumps(frame).decode())
        else:
            await self.ws.send(frame)

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        assert isinstance(raw, str)
        validate_server_frame(raw)
        frame: dict[str, Any] = orjson.loads(raw)
        return frame

    async def until(self, kind: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Frames up to and including the first of type `kind`."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout=timeout)
                frames.append(frame)
                if frame["type"] == kind:
                    return frames

    async def ping(self) -> None:
        """A round trip: proves the socket is open and everything sent before was handled."""
        await self.send({"type": "ping"})
        frame = await self.recv()
        assert frame == {"type": "pong"}

    async def quiet(self, seconds: float = 0.3) -> None:
        """Nothing arrives for a while."""
        with contextlib.suppress(TimeoutError):
            frame = await self.recv(timeout=seconds)
            raise AssertionError(f"unexpected frame {frame}")


@contextlib.asynccontextmanager
async def connect(chat: Chat, **url: Any) -> AsyncIterator[Socket]:
    async with websockets.connect(chat.url(**url), max_size=None, open_timeout=10) as ws:
        sock = Socket(ws)
        sock.ready = await sock.recv()
        assert sock.ready["type"] == "ready"
        yield sock


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["delta"] for f in frames if f["type"] == "text_delta")


def run_frames(frames: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("run_id") == run_id and f.get("seq") is not None]
