"""uvicorn's WebSocket protocol, with the closes a client's mistakes deserve.

When a client sends a frame over `ws_max_size` (1009) or a text frame that is not UTF-8 (1007), the websockets
library fails the connection and uvicorn writes the close frame, then closes the TCP connection at once. The client
is usually still writing the rest of its frame: the kernel answers those bytes with a reset, and a reset destroys
data the client has not read yet, the close frame included, so the client sees 1006 (no close frame) instead. Here
the server half-closes, keeps reading (and dropping) what still comes until the client closes its side or
`close_timeout` passes, and logs one warning line: a client's mistake is not a server error.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)

# How long a failed connection may keep sending before it is cut.
DRAIN_TIMEOUT_S = 10.0


class ChinwagWebSocketProtocol(WebSocketsSansIOProtocol):
    """`ws=` for uvicorn (`chinwag serve` and the tests set it)."""

    _draining = False

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self.conn.receive_data(data)  # the failed connection's parser discards it
            return
        super().data_received(data)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            # uvicorn decodes fragmented text itself and logs a traceback for bad UTF-8: check first.
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError as exc:
                self.frames = []
                self.conn.fail(1007, f"invalid UTF-8 at position {exc.start}")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        close = self.conn.close_sent
        assert close is not None
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.warning("WebSocket from %s closed with %d: %s", client, close.code, close.reason)
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self._draining = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client's next read ends after the close frame
        if self.close_timer is None:
            self.close_timer = self.loop.call_later(DRAIN_TIMEOUT_S, self.transport.close)
