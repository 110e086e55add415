"""OpenTelemetry traces, with the `[otel]` extra installed and the standard `OTEL_*` variables set:
a span per chat request (continuing an incoming `traceparent`) and a child span per backend call,
with the GenAI semantic-convention attributes and ours, the call's trace context sent on to the
backend. Without them nothing is imported and nothing is done (`Tracing.from_environment` is None).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("selfmoa")

# Any of these says the operator wants traces exported (OpenTelemetry's own variables).
CONFIGURED = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")


class Tracing:
    """Spans of one process, through `provider` (an OpenTelemetry SDK `TracerProvider`)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("selfmoa")
        self.propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_environment(cls) -> Tracing | None:
        """Tracing as the `OTEL_*` variables ask for it, or None when they ask for nothing."""
        wanted = [name for name in CONFIGURED if os.environ.get(name)]
        if not wanted or os.environ.get("OTEL_TRACES_EXPORTER") == "none" or \
                os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return None
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        except ImportError:
            log.warning("selfmoa: %s set, but OpenTelemetry is not installed: pip install 'selfmoa[otel]'",
                        ", ".join(wanted))
            return None
        provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                           "selfmoa")}))
        if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
            exporter: Any = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def request_span(self, headers: Mapping[str, str], path: str, request_id: str) -> Any:
        """The span of one chat request, continuing the caller's trace where it sent one."""
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(dict(headers))
        return self.tracer.start_span("chat", context=parent, kind=SpanKind.SERVER, attributes={
            "http.request.method": "POST", "url.path": path, "selfmoa.request_id": request_id,
            "gen_ai.operation.name": "chat"})

    def call_span(self, parent: Any, model: str, kind: str,
                  attributes: Mapping[str, Any]) -> tuple[Any, dict[str, str]]:
        """A backend call's span under the request's, and the headers that carry it on."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        context = trace.set_span_in_context(parent)
        span = self.tracer.start_span(f"chat {model}", context=context, kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "selfmoa.kind": kind,
            **attributes})
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier

    def shutdown(self) -> None:
        self.provider.shutdown()


def end_span(span: Any, attributes: Mapping[str, Any], *, failed: bool = False) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes({k: v for k, v in attributes.items() if v is not None})
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end()
