"""SSE framing, CPU per event: chinwag's `SSEParser` against the `openai` client's decoder and, when installed,
`httpx-sse`'s (not a dependency: `pip install httpx-sse` into the venv to include it). One 2,000-chunk chat
completions stream from the fake server's wire format, parsed in memory.

    python -m bench.sse [--chunks 2000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from openai._streaming import SSEDecoder as OpenAIDecoder
from openai._streaming import _SSELineDecoder

from chinwag.llm.sse import SSEParser
from tests.fakes.openai_script import split_tokens
from tests.fakes.openai_wire import Answer, chat_stream


def _chunks(count: int) -> list[bytes]:
    tokens = split_tokens("word " * count, None)
    answer = Answer(
        model="m", response_id="r", message_id="m", tokens=tokens, tool_calls=[], input_tokens=1, output_tokens=1
    )
    wire = chat_stream(answer, include_usage=True)
    return [wire.head, *wire.chunks, wire.tail]


def _chinwag(chunks: list[bytes]) -> int:
    parser = SSEParser()
    return sum(len(parser.feed(chunk)) for chunk in chunks)


def _openai(chunks: list[bytes]) -> int:
    decoder, lines = OpenAIDecoder(), _SSELineDecoder()
    return sum(1 for chunk in chunks for _ in decoder._decode_lines(lines.feed(chunk)))


def _httpx_sse() -> Callable[[list[bytes]], int] | None:
    try:
        from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None

    def parse(chunks: list[bytes]) -> int:
        lines, decoder = SSELineDecoder(), SSEDecoder()
        return sum(1 for chunk in chunks for line in lines.decode(chunk.decode()) if decoder.decode(line) is not None)

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    chunks = _chunks(args.chunks)
    candidates: list[tuple[str, Callable[[list[bytes]], int]]] = [("chinwag SSEParser", _chinwag), ("openai", _openai)]
    httpx_sse = _httpx_sse()
    if httpx_sse is not None:
        candidates.append(("httpx-sse", httpx_sse))
    print("| parser | us of CPU per event |\n| --- | --- |")
    for name, parse in candidates:
        events = parse(chunks)
        started = time.process_time()
        for _ in range(args.rounds):
            parse(chunks)
        per_event = (time.process_time() - started) / args.rounds / events * 1e6
        print(f"| {name} | {per_event:.2f} |")


if __name__ == "__main__":
    main()
