"""Offline token counting: tiktoken with the encoding files shipped in `chinwag/llm/encodings/`.

tiktoken downloads its encoding files on first use; chinwag never lets it. The files here are OpenAI's public
`o200k_base` and `cl100k_base` BPE ranks, byte for byte (gzip-compressed; their SHA-256 is checked on load against the
hashes tiktoken itself pins), read straight into `tiktoken.Encoding`, so no download is ever tried.

Counts of SDK input items are estimates of what the provider will bill: the text of the item (message content,
function-call name and arguments, tool output, reasoning summary) plus a small per-item overhead.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import functools
import gzip
import hashlib
import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import orjson
import tiktoken
from pydantic import BaseModel

# Per item: role / type markers and separators (OpenAI documents 3-4 tokens per chat message).
ITEM_OVERHEAD = 4
# An image part, whatever its size: OpenAI bills a 1024x1024 "high detail" image at about 765 tokens.
IMAGE_TOKENS = 765
# Texts longer than this are counted in a worker thread by `count_text_async`.
THREAD_THRESHOLD = 32_000
# tiktoken's regex backtracks on very long runs (a long run of spaces overflows its stack): count in slices.
_SLICE = 8_192
_SLICE_BACKTRACK = 256

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class _EncodingSpec:
    file: str
    sha256: str
    pat_str: str
    special_tokens: dict[str, int]


# The same patterns, special tokens and hashes as `tiktoken_ext.openai_public` (tests check they still agree).
_SPECS: dict[str, _EncodingSpec] = {
    "o200k_base": _EncodingSpec(
        file="o200k_base.tiktoken.gz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
    "cl100k_base": _EncodingSpec(
        file="cl100k_base.tiktoken.gz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
            r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
}

ENCODINGS = tuple(_SPECS)


class EncodingFileError(RuntimeError):
    """A shipped encoding file is missing or does not match its pinned hash."""


@functools.cache
def load_encoding(name: str) -> tiktoken.Encoding:
    """The named encoding, from the shipped file. Cached for the process: it is immutable data that takes most of a
    second and tens of MB to build, like tiktoken's own registry."""
    spec = _spec(name)
    try:
        packed = importlib.resources.files("chinwag.llm").joinpath("encodings", spec.file).read_bytes()
    except OSError as exc:
        raise EncodingFileError(f"encoding file {spec.file} is missing from the chinwag package") from exc
    return parse_encoding(name, packed)


def parse_encoding(name: str, packed: bytes) -> tiktoken.Encoding:
    """Build the named encoding from its gzip-compressed rank file, refusing a file that is not the pinned one."""
    spec = _spec(name)
    try:
        contents = gzip.decompress(packed)
    except (OSError, EOFError) as exc:
        raise EncodingFileError(f"encoding file {spec.file} is not gzip data") from exc
    if hashlib.sha256(contents).hexdigest() != spec.sha256:
        raise EncodingFileError(f"encoding file {spec.file} does not match its pinned SHA-256")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in contents.splitlines())}
    return tiktoken.Encoding(
        name=name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )


def _spec(name: str) -> _EncodingSpec:
    spec = _SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
    return spec


def encoding_for_model(model_id: str) -> str:
    """`cl100k_base` for the GPT-4 / GPT-3.5 generation, `o200k_base` for everything newer (and unknown models)."""
    name = model_id.rsplit("/", 1)[-1].lower()
    if name.startswith(("gpt-3.5", "gpt-35")) or (
        name.startswith("gpt-4") and not name.startswith(("gpt-4o", "gpt-4."))
    ):
        return "cl100k_base"
    return "o200k_base"


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens offline: text, and SDK input items (dicts, or the SDK's pydantic output items)."""

    def count_text(self, text: str) -> int: ...

    def count_item(self, item: Any) -> int: ...

    def count_items(self, items: Iterable[Any]) -> int: ...

    async def count_text_async(self, text: str) -> int:
        """`count_text` for the event loop: long texts are counted in a worker thread."""
        ...


class _ItemCounting(abc.ABC):
    """`count_item` and `count_items` on top of a `count_text`."""

    @abc.abstractmethod
    def count_text(self, text: str) -> int: ...

    def count_items(self, items: Iterable[Any]) -> int:
        return sum(self.count_item(item) for item in items)

    async def count_text_async(self, text: str) -> int:
        """`count_text` that moves long texts off the event loop (tiktoken releases the GIL while it encodes)."""
        if len(text) <= THREAD_THRESHOLD:
            return self.count_text(text)
        return await asyncio.to_thread(self.count_text, text)

    def count_item(self, item: Any) -> int:
        data = _as_dict(item)
        if data is None:
            return ITEM_OVERHEAD + self.count_text(str(item))
        kind = data.get("type")
        if kind is None and "role" in data:
            kind = "message"
        if kind == "message":
            return ITEM_OVERHEAD + self._count_content(data.get("content"))
        if kind == "function_call":
            return (
                ITEM_OVERHEAD
                + self.count_text(str(data.get("name") or ""))
                + self._count_content(data.get("arguments"))
            )
        if kind == "custom_tool_call":
            return ITEM_OVERHEAD + self.count_text(str(data.get("name") or "")) + self._count_content(data.get("input"))
        if kind in {
            "function_call_output",
            "custom_tool_call_output",
            "computer_call_output",
            "local_shell_call_output",
        }:
            return ITEM_OVERHEAD + self._count_content(data.get("output"))
        if kind == "reasoning":
            return ITEM_OVERHEAD + self._count_content(data.get("summary")) + self._count_content(data.get("content"))
        if kind == "item_reference":
            return ITEM_OVERHEAD
        # Anything else (hosted tool calls and their results): its JSON, without bookkeeping fields.
        rest = {k: v for k, v in data.items() if k not in {"id", "status", "type"}}
        return ITEM_OVERHEAD + self.count_text(orjson.dumps(rest, default=str).decode())

    def _count_content(self, content: Any) -> int:
        if content is None:
            return 0
        if isinstance(content, str):
            return self.count_text(content)
        if isinstance(content, list):
            return sum(self._count_part(part) for part in content)
        return self._count_part(content)

    def _count_part(self, part: Any) -> int:
        data = _as_dict(part)
        if data is None:
            return self.count_text(str(part))
        kind = data.get("type")
        if kind in {"input_image", "image_url", "image"}:
            return IMAGE_TOKENS
        for key in ("text", "refusal", "transcript"):
            value = data.get(key)
            if isinstance(value, str):
                return self.count_text(value)
        if kind == "input_file":
            return self.count_text(str(data.get("filename") or "")) + len(str(data.get("file_data") or "")) // 4
        return self.count_text(orjson.dumps(data, default=str).decode())


class TiktokenCounter(_ItemCounting):
    """Exact token counts with a shipped tiktoken encoding (`o200k_base` by default)."""

    def __init__(self, encoding: str = "o200k_base") -> None:
        self.encoding = load_encoding(encoding)

    @classmethod
    def for_model(cls, model_id: str) -> TiktokenCounter:
        return cls(encoding_for_model(model_id))

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        if len(text) <= _SLICE:
            return len(self.encoding.encode_ordinary(text))
        return sum(len(self.encoding.encode_ordinary(piece)) for piece in _slices(text))


class ApproximateCounter(_ItemCounting):
    """About four characters per token: for when no encoding can be used. Same interface as `TiktokenCounter`."""

    def count_text(self, text: str) -> int:
        return (len(text) + 3) // 4


def _slices(text: str) -> Iterable[str]:
    """`text` in slices of at most `_SLICE` characters, cut before a whitespace where one is near, so words stay
    whole and the count matches the unsliced one but for a token or so per slice."""
    start, size = 0, len(text)
    while start < size:
        end = min(start + _SLICE, size)
        if end < size:
            floor = end - _SLICE_BACKTRACK
            cut = end
            while cut > floor and not text[cut].isspace():
                cut -= 1
            if cut > floor and cut > start:
                end = cut
        yield text[start:end]
        start = end


def _as_dict(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, BaseModel):
        dumped: dict[str, Any] = value.model_dump(mode="json", exclude_unset=True)
        return dumped
    return None
