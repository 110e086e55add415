"""What one request reports to the operator: its metrics (`metrics.py`) and, where traces are on,
its span and a child span per backend call (`tracing.py`). A request gets a `RequestTelemetry`;
the core watches its calls through `watcher()` (our approaches), the glue through `call()` (a
plain model's call, optillm's approaches' calls)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selfmoa.approaches import Usage
from selfmoa.approaches.watch import Watch, Watcher

from .metrics import Metrics
from .tracing import Tracing, end_span


@dataclass(frozen=True)
class Telemetry:
    """The process's metrics and tracing (owned by the service, shared by its requests)."""

    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing | None = None

    def request(self, request_id: str, headers: Mapping[str, str], path: str) -> RequestTelemetry:
        span = self.tracing.request_span(headers, path, request_id) if self.tracing else None
        return RequestTelemetry(self, request_id, span)


class RequestTelemetry:
    def __init__(self, telemetry: Telemetry, request_id: str, span: Any) -> None:
        self.telemetry, self.request_id, self.span = telemetry, request_id, span
        self.approach = "none"
        self.summary: dict[str, Any] = {}  # the fields the route adds to the request's log line
        self.started = time.monotonic()
        self.first_token: float | None = None

    def watcher(self) -> Watcher:
        """The watcher of our approaches' calls for this request."""
        return _Watcher(self)

    def call(self, model: str, kind: str, *, raced: bool = False, step: int = 1) -> Watch:
        """One backend call of this request about to go out (any route's)."""
        return _CallWatch(self, model, kind, raced, step)

    def first_byte(self) -> None:
        """The streamed answer's first piece went out."""
        if self.first_token is None:
            self.first_token = time.monotonic() - self.started

    def fell_back(self) -> None:
        self.telemetry.metrics.fallbacks.labels(self.approach).inc()

    def finish(self, status: int) -> None:
        metrics, wall = self.telemetry.metrics, time.monotonic() - self.started
        metrics.requests.labels(self.approach, str(status)).inc()
        metrics.duration.labels(self.approach).observe(wall)
        if self.first_token is not None:
            metrics.ttft.labels(self.approach).observe(self.first_token)
        if self.span is not None:
            end_span(self.span, {"selfmoa.approach": self.approach, "http.response.status_code": status},
                     failed=status >= 500)


class _Watcher:
    def __init__(self, request: RequestTelemetry) -> None:
        self.request = request

    def start(self, endpoint: str, model: str, kind: str, *, raced: bool, step: int) -> Watch:
        return self.request.call(model, kind, raced=raced, step=step)


class _CallWatch:
    headers: Mapping[str, str]

    def __init__(self, request: RequestTelemetry, model: str, kind: str, raced: bool, step: int) -> None:
        self.request, self.model, self.kind = request, model, kind
        headers = {"x-request-id": request.request_id}
        self.span = None
        tracing = request.telemetry.tracing
        if tracing is not None and request.span is not None:
            attributes = {"selfmoa.approach": request.approach, "selfmoa.raced": raced, "selfmoa.round": step}
            self.span, carried = tracing.call_span(request.span, model, kind, attributes)
            headers.update(carried)
        self.headers = headers

    def end(self, outcome: str, usage: Usage | None) -> None:
        self.request.telemetry.metrics.call(self.model, self.kind, outcome, usage)
        if self.span is not None:
            end_span(self.span, {
                "selfmoa.outcome": outcome,
                "gen_ai.usage.input_tokens": usage.prompt_tokens if usage else None,
                "gen_ai.usage.output_tokens": usage.completion_tokens if usage else None,
            }, failed=outcome == "error")
