"""A run's Layer 1 history as one item of the SDK's input, sent as JSON encoded once per stored row.

Why: the Agents SDK walks every input item several times per model call (`input_to_new_input_list` copies each one
deeply, twice, then its normalisation, de-duplication, the Chat Completions converter and `_to_dump_compatible`),
and the request body is encoded again; at turn 150 of a session that was most of what a message cost more than at
turn 10. Layer 1 rows never change once written (a rewrite gives new ids), so what a row becomes in a request can
be made once and kept.

How: on the lean path `TokenAwareSession.get_items()` answers one `history_item(...)`: a dict the SDK passes along
untouched (its value is neither a mapping nor iterable, so the SDK's copies stop at it, and it has no type, role,
id or call id the SDK acts on). chinwag's models (`llm.provider`) take it out of the input, give the SDK's own
`_fetch_response` only the run's new items, and hand the history's encoded JSON to the lean client through
`extra_body` (`HistorySplice`), which writes it into the body where the SDK would have put those items. Each group of
rows is converted by the SDK's own functions (the Chat Completions converter; the Responses API's clean-up), so the
result is what the SDK would send; it is kept in `HistoryCache` (owned by `LlmClients`) by its row ids and how it
was converted. Whenever splicing could differ from the SDK (the new items would be merged with the history's last
message by the converter, or share a call id with it), the model gives the SDK the history's items as they are.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from agents.models.fake_id import FAKE_RESPONSES_ID
from agents.run_internal.items import strip_internal_input_item_metadata
from agents.util._json import _to_dump_compatible
from openai._compat import model_dump as _openai_model_dump

HISTORY_TYPE = "chinwag_history"
"""The `type` of the one input item that stands for a run's history (never sent: the model takes it out)."""
SPLICE_KEY = "__chinwag_history__"
"""The `extra_body` key that carries a `HistorySplice` from chinwag's model to the lean client (never sent)."""
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024

Item = dict[str, Any]
Encode = Callable[[Sequence[Item]], bytes]
"""Items of one group -> their request JSON, comma-separated values without brackets (b"" for nothing)."""


class HistoryCache:
    """Encoded history groups by `(how converted, row ids)`, least recently used dropped past `max_bytes`.

    Only a cache: a row's item never changes under its id, so an entry is never stale, and each process (worker)
    keeps its own."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[Hashable, bytes] = collections.OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        made = make()
        if len(made) <= self.max_bytes:
            self._entries[key] = made
            self._bytes += len(made)
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
        return made


@dataclass(frozen=True)
class _Group:
    items: tuple[Item, ...]
    rows: tuple[int, ...] | None
    """The ids of the stored rows the items are, unchanged; None when one of them is not a stored row as stored
    (the summary, a cut turn, an item whose images were loaded): such a group is converted again each time."""


@dataclass(eq=False)
class History:
    """The items a run's model calls get as history (`items`), with the Layer 1 row of each (`rows`: an id, or
    None for an item that is not a stored row as stored). Built once per run; not iterable on purpose (the SDK
    must not walk into it)."""

    items: list[Item]
    rows: list[int | None]
    cache: HistoryCache
    _groups: list[_Group] | None = field(default=None, repr=False)
    _keys: frozenset[str] | None = field(default=None, repr=False)
    _duplicates: bool = field(default=False, repr=False)

    def groups(self) -> list[_Group]:
        """The items split before each user or system message: the Chat Completions converter starts afresh at
        those, so converting the groups one by one gives what converting the whole list does."""
        if self._groups is None:
            groups: list[_Group] = []
            items: list[Item] = []
            rows: list[int] | None = []
            keys: set[str] = set()
            duplicates = False
            for item, row in zip(self.items, self.rows, strict=True):
                if items and starts_afresh(item):
                    groups.append(_Group(tuple(items), tuple(rows) if rows is not None else None))
                    items, rows = [], []
                items.append(item)
                if rows is not None and row is not None:
                    rows.append(row)
                else:
                    rows = None
                key = identity_key(item)
                if key is not None:
                    duplicates = duplicates or key in keys
                    keys.add(key)
            if items:
                groups.append(_Group(tuple(items), tuple(rows) if rows is not None else None))
            self._groups, self._keys, self._duplicates = groups, frozenset(keys), duplicates
        return self._groups

    def fits_before(self, rest: Sequence[Any]) -> bool:
        """Whether the SDK would send these items, followed by `rest`, as the two sent apart: `rest` starts afresh
        for the converter (or the history ends with a user message, after which nothing is pending), and no item
        of either shares the identity (call id, provider id) the SDK de-duplicates by."""
        self.groups()
        if self._duplicates:
            return False
        if rest and self.items:
            first = rest[0]
            if not (isinstance(first, Mapping) and starts_afresh(first)) and not _is_user_message(self.items[-1]):
                return False
        keys = self._keys or frozenset()
        return not any(isinstance(item, Mapping) and identity_key(item) in keys for item in rest)

    def encoded(self, how: Hashable, encode: Encode) -> list[bytes]:
        """The history's groups as request JSON, each encoded once per `how` while its rows stay cached."""
        parts: list[bytes] = []
        for group in self.groups():
            if group.rows is None:
                made = encode(group.items)
            else:
                made = self.cache.get((how, group.rows), lambda group=group: encode(group.items))  # type: ignore[misc]
            if made:
                parts.append(made)
        return parts


@dataclass(frozen=True)
class HistorySplice:
    """What the lean client writes into a request body: `parts` (encoded JSON values) into the list `key` at
    index `at` of the list the SDK built."""

    key: str
    at: int
    parts: list[bytes]


def history_item(history: History) -> Item:
    """The one SDK input item that stands for `history`."""
    return {"type": HISTORY_TYPE, "history": history}


def split_history(items: str | list[Any]) -> tuple[History | None, str | list[Any]]:
    """The history item of an SDK input taken out: `(history, the other items)`, or `(None, items)`."""
    if isinstance(items, str):
        return None, items
    for index, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("type") == HISTORY_TYPE:
            history = item.get("history")
            if isinstance(history, History):
                return history, [*items[:index], *items[index + 1 :]]
    return None, items


def starts_afresh(item: Mapping[str, Any]) -> bool:
    """A message the Chat Completions converter begins anew at (it flushes what was pending: a user, system or
    developer message)."""
    return item.get("role") in ("user", "system", "developer") and item.get("type", "message") == "message"


def _is_user_message(item: Mapping[str, Any]) -> bool:
    return item.get("role") == "user" and item.get("type", "message") == "message"


def identity_key(item: Mapping[str, Any]) -> str | None:
    """What the SDK's `deduplicate_input_items_preferring_latest` knows an item by (messages by nothing)."""
    if item.get("role") is not None or item.get("type", "message") == "message":
        return None
    kind, call_id, item_id = item.get("type"), item.get("call_id"), item.get("id")
    if isinstance(call_id, str):
        return f"call_id:{kind}:{call_id}"
    if isinstance(item_id, str) and item_id != FAKE_RESPONSES_ID:
        return f"id:{kind}:{item_id}"
    # (The SDK also knows hosted MCP approvals by their request id: any such item keeps the history apart.)
    return "approval" if "approval_request_id" in item else None


def prepared(items: Iterable[Item]) -> list[Any]:
    """Items as the SDK's input handling leaves them for its model: session metadata stripped, plain JSON data."""
    return [_to_dump_compatible(strip_internal_input_item_metadata(item)) for item in items]  # type: ignore[arg-type]


def _default(value: Any) -> Any:
    # What `openai`'s own JSON encoder takes besides plain data (it dumps pydantic models as set fields).
    if hasattr(value, "model_dump"):
        return _openai_model_dump(value, exclude_unset=True, mode="json")
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default)


def join(values: Iterable[Any]) -> bytes:
    """Values as comma-separated JSON (the inside of a list)."""
    return b",".join(dumps(value) for value in values)
