"""Offline token counting with the shipped encodings."""

from __future__ import annotations

import gzip
import hashlib
import socket
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from chinwag.llm.tokens import (
    IMAGE_TOKENS,
    ITEM_OVERHEAD,
    THREAD_THRESHOLD,
    ApproximateCounter,
    EncodingFileError,
    TiktokenCounter,
    TokenCounter,
    encoding_for_model,
    load_encoding,
    parse_encoding,
)

SAMPLES = [
    "hello world",
    "Hello, World! How's it going? I'd say it's fine.",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "Ünïcödé: 日本語のテキスト, русский текст, emoji 🎉🎉 and <|endoftext|> as plain text",
    "  leading and trailing spaces   \t\n",
    "1234567890 3.14159 -42 1e10",
]


@pytest.fixture(scope="module")
def counter() -> TiktokenCounter:
    return TiktokenCounter()


def test_hello_world_is_two_tokens(counter: TiktokenCounter) -> None:
    assert counter.count_text("hello world") == 2
    assert TiktokenCounter("cl100k_base").count_text("hello world") == 2
    assert counter.count_text("") == 0
    assert isinstance(counter, TokenCounter)


def test_counts_are_stable_and_plausible(counter: TiktokenCounter) -> None:
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 50)
    first = counter.count_text(text)
    assert first == counter.count_text(text)
    assert first == 50 * 10  # nine words and a full stop, each one token in o200k
    assert counter.count_text("<|endoftext|>") > 1  # special tokens in user text are just text


def test_loading_builds_no_network_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    for name in ("o200k_base", "cl100k_base"):
        encoding = load_encoding.__wrapped__(name)  # uncached: really read the file again
        assert encoding.encode_ordinary("hello world") == load_encoding(name).encode_ordinary("hello world")


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_same_as_tiktokens_own_encoding(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's own constructor, fed our file through its offline cache, builds the very same encoding."""
    ours = load_encoding(name)
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    cache_file = tmp_path / hashlib.sha1(url.encode()).hexdigest()  # tiktoken's cache key
    cache_file.write_bytes(
        gzip.decompress(files("chinwag.llm").joinpath("encodings", f"{name}.tiktoken.gz").read_bytes())
    )
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tiktoken tried to download")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    official = getattr(tiktoken_ext.openai_public, name)()
    theirs = tiktoken.Encoding(**official)
    assert ours._pat_str == theirs._pat_str
    assert ours._special_tokens == theirs._special_tokens
    assert ours.n_vocab == theirs.n_vocab
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)


def test_long_texts_are_sliced_without_changing_the_count_much(counter: TiktokenCounter) -> None:
    words = " ".join(f"word{i} and, some. punctuation!" for i in range(5000))
    exact = len(counter.encoding.encode_ordinary(words))
    sliced = counter.count_text(words)
    assert abs(sliced - exact) <= len(words) // 8192 + 1


def test_pathological_runs_do_not_crash(counter: TiktokenCounter) -> None:
    # Unsliced, tiktoken's regex overflows its stack on a million spaces (a Rust panic) and is quadratic on long runs
    # (how fast the sliced count is belongs in bench/, not here).
    assert counter.count_text(" " * 1_000_000) > 0
    assert counter.count_text("a" * 1_000_000) > 0
    assert counter.count_text("\n" * 300_000) > 0


async def test_count_text_async_matches_and_uses_a_thread(counter: TiktokenCounter) -> None:
    long_text = "Some sentence that repeats itself. " * (THREAD_THRESHOLD // 10)
    assert await counter.count_text_async(long_text) == counter.count_text(long_text)
    assert await counter.count_text_async("hello world") == 2


def test_count_items(counter: TiktokenCounter) -> None:
    message = {"role": "user", "content": "hello world"}
    assert counter.count_item(message) == ITEM_OVERHEAD + 2
    parts = {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "hello world"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
        ],
    }
    assert counter.count_item(parts) == ITEM_OVERHEAD + 2 + IMAGE_TOKENS
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert counter.count_item(call) == ITEM_OVERHEAD + counter.count_text("get_weather") + counter.count_text(
        '{"city": "Paris"}'
    )
    output = {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 degrees"}
    assert counter.count_item(output) == ITEM_OVERHEAD + counter.count_text("sunny, 21 degrees")
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hello world"}]}
    assert counter.count_item(reasoning) == ITEM_OVERHEAD + 2
    assert counter.count_item({"type": "item_reference", "id": "x"}) == ITEM_OVERHEAD
    hosted = {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"query": "cats"}}
    assert counter.count_item(hosted) > ITEM_OVERHEAD
    assert counter.count_items([message, call, output]) == (
        counter.count_item(message) + counter.count_item(call) + counter.count_item(output)
    )


def test_count_sdk_pydantic_items(counter: TiktokenCounter) -> None:
    call = ResponseFunctionToolCall(type="function_call", call_id="c", name="add", arguments='{"a": 1}')
    assert counter.count_item(call) == counter.count_item(call.model_dump(exclude_unset=True))
    text = ResponseOutputText(type="output_text", text="hello world", annotations=[])
    message = ResponseOutputMessage(id="m", type="message", role="assistant", status="completed", content=[text])
    assert counter.count_item(message) == ITEM_OVERHEAD + 2


def test_encoding_for_model() -> None:
    assert encoding_for_model("gpt-4o") == "o200k_base"
    assert encoding_for_model("gpt-4.1-mini") == "o200k_base"
    assert encoding_for_model("gpt-5") == "o200k_base"
    assert encoding_for_model("o3") == "o200k_base"
    assert encoding_for_model("gpt-4") == "cl100k_base"
    assert encoding_for_model("gpt-4-turbo-2024-04-09") == "cl100k_base"
    assert encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("llama3.2:3b") == "o200k_base"
    assert TiktokenCounter.for_model("gpt-4").encoding.name == "cl100k_base"
    with pytest.raises(ValueError, match="unknown encoding"):
        load_encoding("p50k_base")


def test_approximate_counter_has_the_same_interface() -> None:
    approx = ApproximateCounter()
    assert isinstance(approx, TokenCounter)
    assert approx.count_text("abcdefgh") == 2
    assert approx.count_item({"role": "user", "content": "abcd"}) == ITEM_OVERHEAD + 1


def test_a_damaged_encoding_file_is_refused() -> None:
    packed = files("chinwag.llm").joinpath("encodings", "cl100k_base.tiktoken.gz").read_bytes()
    with pytest.raises(EncodingFileError, match="pinned SHA-256"):
        parse_encoding("o200k_base", packed)  # the wrong file
    tampered = gzip.decompress(packed).replace(b" 100\n", b" 101\n", 1)
    with pytest.raises(EncodingFileError, match="pinned SHA-256"):
        parse_encoding("cl100k_base", gzip.compress(tampered))
    with pytest.raises(EncodingFileError, match="not gzip"):
        parse_encoding("cl100k_base", b"not gzip at all")
