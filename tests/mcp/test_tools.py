"""The output cap on its own: bytes, not characters, valid UTF-8 after the cut, other content blocks counted too."""

from __future__ import annotations

from mcp.types import CallToolResult, ImageContent, TextContent

from chinwag.mcp.tools import cap_output


def texts(result: CallToolResult) -> list[str]:
    return [item.text for item in result.content if isinstance(item, TextContent)]


def test_output_under_the_cap_is_returned_as_it_is() -> None:
    result = CallToolResult(content=[TextContent(type="text", text="é" * 1000)], structured_content={"a": 1})
    assert cap_output(result, 2000) is result


def test_multibyte_text_is_cut_by_bytes_at_a_character_boundary() -> None:
    text = "日本語のテキスト" * 10_000  # 3 bytes a character
    capped = cap_output(CallToolResult(content=[TextContent(type="text", text=text)]), 1000)
    kept, marker = texts(capped)
    assert len(kept.encode("utf-8")) <= 1000
    assert len(kept.encode("utf-8")) >= 998
    assert text.startswith(kept)
    assert marker == f"\n[output truncated: {len(text.encode('utf-8'))} bytes, only the first 1000 shown]"
    assert capped.structured_content is None


def test_blocks_after_the_cap_are_dropped_and_counted() -> None:
    image = ImageContent(type="image", data="A" * 5000, mime_type="image/png")
    result = CallToolResult(
        content=[TextContent(type="text", text="a" * 600), image, TextContent(type="text", text="z")]
    )
    capped = cap_output(result, 1000)
    assert [type(item).__name__ for item in capped.content] == ["TextContent", "TextContent"]
    assert texts(capped)[0] == "a" * 600
    assert "only the first 1000 shown" in texts(capped)[1]
