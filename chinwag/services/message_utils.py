"""Helpers shared by the session, message and search services: ids from the wire, opaque list cursors."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from chinwag.errors import BadRequest, NotFound

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_id(value: str, *, what: str = "session") -> uuid.UUID:
    """An id from a path: anything that is not a UUID cannot name a resource, so it is a 404 like any unknown id."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        raise NotFound(f"{what} not found") from None


@dataclass(frozen=True, slots=True)
class SessionCursor:
    """The position of the last session of a page in the list order (pinned, updated_at, id), all descending."""

    pinned: bool
    updated_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        micros = (self.updated_at - _EPOCH) // timedelta(microseconds=1)
        raw = orjson.dumps([int(self.pinned), micros, self.id.hex])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, cursor: str) -> SessionCursor:
        """Parse a cursor given back by a client; anything we did not make is a 400."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            pinned, micros, hex_id = orjson.loads(raw)
            if pinned not in (0, 1) or type(pinned) is not int or type(micros) is not int:
                raise ValueError(cursor)
            return cls(
                pinned=bool(pinned),
                updated_at=_EPOCH + timedelta(microseconds=micros),
                id=uuid.UUID(hex=hex_id),
            )
        except (ValueError, TypeError, AttributeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
            raise BadRequest("invalid cursor: pass back the next_cursor of a previous page") from None
