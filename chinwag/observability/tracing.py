"""OpenTelemetry traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the `otel` extra: `pip install chinwag[otel]`).

The exporter reads the standard `OTEL_*` variables itself (endpoint, headers, protocol details); the service name
is `OTEL_SERVICE_NAME`, default `chinwag`. Requests (FastAPI), database queries (asyncpg) and httpx calls are
instrumented by their libraries; runs, model calls and tool calls get spans of chinwag's own (`Observer`).

The Agents SDK has a tracing system of its own that exports to OpenAI: chinwag keeps it off
(`set_tracing_disabled(True)`, `RunConfig(tracing_disabled=True)`), whatever is set here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from fastapi import FastAPI
from opentelemetry.trace import Tracer, TracerProvider

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACER_NAME = "chinwag"


def otlp_provider() -> Any | None:
    """An SDK tracer provider exporting over OTLP/HTTP, or None when no endpoint is set (or the extra is missing,
    which is said once in the log)."""
    if not os.environ.get(ENDPOINT_ENV) and not os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        logger.warning("%s is set but the otel extra is missing (pip install 'chinwag[otel]'): no traces", ENDPOINT_ENV)
        return None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "chinwag")})
    provider = SdkTracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    logger.info("traces: exported over OTLP to %s", os.environ.get(ENDPOINT_ENV))
    return provider


def instrument(app: FastAPI, provider: TracerProvider, *, libraries: bool) -> Tracer:
    """For `create_app` (before the app starts: the request middleware must be in its stack): requests traced
    through `provider`, and with `libraries` also asyncpg and httpx (patched process-wide, so only for the one
    provider a real process has, never a test's). Returns chinwag's tracer for its own spans."""
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        logger.info("OpenTelemetry instrumentations not installed: only runs, model and tool calls are traced")
        return provider.get_tracer(TRACER_NAME)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])
    if libraries:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        for instrumentor in (AsyncPGInstrumentor(), HTTPXClientInstrumentor()):  # type: ignore[no-untyped-call]
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
    return provider.get_tracer(TRACER_NAME)


def flush(provider: TracerProvider | None) -> None:
    """At shutdown: spans still queued are exported."""
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        with contextlib.suppress(Exception):
            force_flush()
