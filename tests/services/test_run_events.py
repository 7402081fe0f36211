"""The SDK -> wire mapping, driven by the SDK's own `ScriptedModel` through `Runner.run_streamed`."""

from __future__ import annotations

from agents import Agent, RunConfig, Runner, function_tool
from agents.testing import ScriptedModel, assistant_message, function_call

from chinwag.services.run_events import (
    Mapped,
    ModelTurnStarted,
    ToolFinished,
    ToolStarted,
    map_stream_event,
    tool_output_text,
)


@function_tool
def get_time(city: str) -> str:
    """The time in a city."""
    return f"12:00 in {city}"


async def mapped_run(model: ScriptedModel) -> list[Mapped]:
    agent = Agent(name="t", instructions="i", model=model, tools=[get_time])
    result = Runner.run_streamed(agent, "what time is it?", run_config=RunConfig(tracing_disabled=True))
    out: list[Mapped] = []
    async for event in result.stream_events():
        mapped = map_stream_event(event)
        if mapped is not None:
            out.append(mapped)
    return out


async def test_text_then_tool_then_text_maps_to_one_fact_per_event() -> None:
    model = ScriptedModel(
        [
            [assistant_message("Let me check."), function_call("get_time", {"city": "Paris"}, call_id="c1")],
            [assistant_message("It is noon.")],
        ]
    )
    out = await mapped_run(model)
    texts = [m for m in out if isinstance(m, str)]
    assert "".join(texts) == "Let me check.It is noon."
    starts = [m for m in out if isinstance(m, ToolStarted)]
    dones = [m for m in out if isinstance(m, ToolFinished)]
    assert starts == [ToolStarted(call_id="c1", name="get_time", arguments='{"city":"Paris"}')]
    assert dones == [ToolFinished(call_id="c1", output="12:00 in Paris")]
    # Order: turn 1 text, the tool announced, its output, then turn 2.
    kinds = [type(m).__name__ for m in out]
    assert kinds.index("ToolStarted") < kinds.index("ToolFinished")
    assert out.count(ModelTurnStarted()) == 2
    assert out.index(dones[0]) < len(out) - 1 - out[::-1].index(ModelTurnStarted())


def test_tool_output_text_is_capped_and_serialises_objects() -> None:
    assert tool_output_text({"a": 1}) == '{"a": 1}'
    long = tool_output_text("x" * 200_000)
    assert len(long) < 101_000
    assert long.endswith("[output truncated]")


def test_tool_output_parts_become_text() -> None:
    assert tool_output_text({"type": "text", "text": "hello"}) == "hello"
    assert tool_output_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "a\nb"
    assert tool_output_text([{"type": "text", "text": "see"}, {"type": "image", "image_url": "x"}]) == "see\n[image]"
    assert tool_output_text([]) == "[]"
