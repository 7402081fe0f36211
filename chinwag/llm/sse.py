"""Server-sent events framing, on bytes: what the lean model stream reads a provider's streamed body with.

It follows the WHATWG "event stream interpretation" rules: lines end in CRLF, LF or CR (also when a CRLF is split
between two network reads); a line starting with `:` is a comment; `field: value` loses one leading space of its
value; several `data:` lines of one event are joined by LF; a blank line dispatches the event, and an event without
data is not dispatched; a UTF-8 byte order mark at the very start is skipped; an event cut off by the end of the body
is dropped. `id` and `retry` are read (the model APIs never resume a stream, so nothing uses them).

Why chinwag's own and not `httpx-sse` (or the `openai` client's copy of it): those decode every line to `str` and
parse it one by one through `str.partition`, and `httpx-sse` reads an `httpx.Response` by text lines; here the data
stays bytes (pydantic validates JSON bytes directly), a read of many lines is split once with `bytes.splitlines`,
and a read that is one whole `data:` event (nearly every read of a model stream) takes a short path. Measured on a
2,000-chunk chat stream (`python -m bench.sse`): about 1.5x less CPU per event than `httpx_sse`'s decoder fed the
same lines, about 4x less than the `openai` client's decoder.
"""

from __future__ import annotations

from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"
_CR = 13
_LF = 10
_COLON = 58
MAX_EVENT_BYTES = 64 * 1024 * 1024
"""An event (or a line) longer than this ends the stream with an error: a provider is not let fill memory."""


class EventTooLarge(ValueError):
    """A server-sent event or line past `MAX_EVENT_BYTES`."""


class ServerEvent(NamedTuple):
    """One dispatched event: `event` is None when the stream named no type; `data` is the joined data lines."""

    data: bytes
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Incremental parser: `feed(chunk)` returns the events completed by that chunk, in order."""

    __slots__ = ("_data", "_event", "_id", "_partial", "_retry", "_size", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._partial = bytearray()
        self._data: list[bytes] = []
        self._size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._skip_lf = False
        self._started = False

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        if not chunk:
            return []
        # The shapes nearly every read of a model stream has: one whole `data:` event (Chat Completions), or one whole
        # `event:` + `data:` event (Responses); LF line ends, nothing pending.
        if (
            chunk.endswith(b"\n\n")
            and self._started
            and not (self._partial or self._data or self._skip_lf)
            and b"\r" not in chunk
        ):
            if chunk.startswith(b"data: ") and chunk.count(b"\n") == 2:
                event = ServerEvent(chunk[6:-2], self._event, self._id, self._retry)
                self._event = None
                return [event]
            if chunk.startswith(b"event: ") and chunk.count(b"\n") == 3:
                name_end = chunk.index(b"\n")
                if chunk.startswith(b"data: ", name_end + 1):
                    kind = chunk[7:name_end].decode("utf-8", "replace")
                    event = ServerEvent(chunk[name_end + 7 : -2], kind or None, self._id, self._retry)
                    self._event = None
                    return [event]
        if self._skip_lf:
            # The previous read ended in CR: an LF now is the second half of that CRLF, not a blank line.
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._partial:
            self._partial += chunk
            chunk = bytes(self._partial)
            self._partial.clear()
        if not self._started:
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._partial += chunk
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
                if not chunk:
                    return []
        lines = chunk.splitlines()
        last = chunk[-1]
        if last == _CR:
            self._skip_lf = True
        elif last != _LF:
            tail = lines.pop()
            if len(tail) > MAX_EVENT_BYTES:
                raise EventTooLarge(f"a server-sent line is over {MAX_EVENT_BYTES} bytes")
            self._partial += tail
        events: list[ServerEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(self._dispatch())
                else:
                    self._event = None
                continue
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                self._data.append(value)
                self._size += len(value)
                if self._size > MAX_EVENT_BYTES:
                    raise EventTooLarge(f"a server-sent event is over {MAX_EVENT_BYTES} bytes")
                continue
            if line[0] == _COLON:
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"data":  # `data` with no colon: an empty data line
                self._data.append(value)
            elif name == b"id":
                if b"\0" not in value:
                    self._id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self._retry = int(value)
        return events

    def _dispatch(self) -> ServerEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        event = ServerEvent(data, self._event or None, self._id, self._retry)
        self._data = []
        self._size = 0
        self._event = None
        return event
