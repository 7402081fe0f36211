"""`Observer`: what runs, model calls and tool calls report, to metrics and to OpenTelemetry spans alike.

The app builds one in its lifespan (`app.state.observer`) and hands it to the model clients, the MCP pool and the
chat service; with metrics off and no tracer every hook is a no-op. The code being observed calls three context
managers and knows nothing of Prometheus or OpenTelemetry:

```python
with observer.run(run_id=..., session_id=..., model=...) as run:
    run.first_text()            # when the first text streams
    run.usage(input_tokens, output_tokens)
    run.finish("stop")          # the run's finish_reason
async with observer.model_call(model):  ...   # one call to the provider
async with observer.tool_call(server, tool): ...  # one MCP tool call
```
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:
    # Not at run time: prometheus_client picks its multi-process mode when first imported, which `chinwag serve`
    # must come before (see `chinwag.observability.multiproc`).
    from chinwag.observability.metrics import Metrics

SPAN_RUN = "chinwag.run"
SPAN_MODEL_CALL = "chinwag.model_call"
SPAN_TOOL_CALL = "chinwag.tool_call"


class RunObservation:
    """One run being observed: its span (if tracing) and its start time."""

    def __init__(self, observer: Observer, span: Span | None) -> None:
        self._observer = observer
        self._span = span
        self._start = time.perf_counter()
        self._first = False
        self.finish_reason = "error"

    def first_text(self) -> None:
        """The first text of the answer streamed (once per run; later calls do nothing)."""
        if self._first:
            return
        self._first = True
        elapsed = time.perf_counter() - self._start
        if self._observer.metrics is not None:
            self._observer.metrics.first_text(elapsed)
        if self._span is not None:
            self._span.add_event("first_text", {"chinwag.seconds": elapsed})

    def usage(self, input_tokens: int, output_tokens: int) -> None:
        if self._observer.metrics is not None:
            self._observer.metrics.usage(input_tokens, output_tokens)
        if self._span is not None:
            self._span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            self._span.set_attribute("gen_ai.usage.output_tokens", output_tokens)

    def finish(self, finish_reason: str) -> None:
        """How the run ended (`assistant_end.finish_reason`); unset, it counts as `error`."""
        self.finish_reason = finish_reason


class Observer:
    """Metrics (None: off) and a tracer (None: no traces)."""

    def __init__(self, *, metrics: Metrics | None = None, tracer: Tracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    @contextlib.contextmanager
    def run(self, *, run_id: str, session_id: str, model: str) -> Iterator[RunObservation]:
        span_scope: contextlib.AbstractContextManager[Span | None] = contextlib.nullcontext()
        if self.tracer is not None:
            span_scope = self.tracer.start_as_current_span(
                SPAN_RUN,
                kind=SpanKind.INTERNAL,
                attributes={"chinwag.run_id": run_id, "chinwag.session_id": session_id, "gen_ai.request.model": model},
                record_exception=True,
                set_status_on_exception=True,
            )
        if self.metrics is not None:
            self.metrics.run_started()
        with span_scope as span:
            observation = RunObservation(self, span)
            try:
                yield observation
            finally:
                if span is not None:
                    span.set_attribute("chinwag.finish_reason", observation.finish_reason)
                    if observation.finish_reason == "error":
                        span.set_status(Status(StatusCode.ERROR))
                if self.metrics is not None:
                    self.metrics.run_ended(observation.finish_reason)

    @contextlib.asynccontextmanager
    async def model_call(self, model: str) -> AsyncIterator[None]:
        start = time.perf_counter()
        ok = False
        span_scope: contextlib.AbstractContextManager[Span | None] = contextlib.nullcontext()
        if self.tracer is not None:
            span_scope = self.tracer.start_as_current_span(
                SPAN_MODEL_CALL, kind=SpanKind.CLIENT, attributes={"gen_ai.request.model": model}
            )
        with span_scope:
            try:
                yield
                ok = True
            finally:
                if self.metrics is not None:
                    self.metrics.model_call(model, time.perf_counter() - start, ok=ok)

    @contextlib.asynccontextmanager
    async def tool_call(self, server: str, tool: str) -> AsyncIterator[None]:
        ok = False
        span_scope: contextlib.AbstractContextManager[Span | None] = contextlib.nullcontext()
        if self.tracer is not None:
            span_scope = self.tracer.start_as_current_span(
                SPAN_TOOL_CALL,
                kind=SpanKind.CLIENT,
                attributes={"chinwag.mcp_server": server, "gen_ai.tool.name": tool},
            )
        with span_scope:
            try:
                yield
                ok = True
            finally:
                if self.metrics is not None:
                    self.metrics.tool_call(server, ok=ok)


NULL_OBSERVER = Observer()
