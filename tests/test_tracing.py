"""OpenTelemetry traces: a span per chat request, continuing the caller's `traceparent`, and a child
span per backend call with the GenAI semantic-convention attributes and ours, its trace context
(and the request id) sent on to the backend. Checked with the SDK's in-memory exporter on an app
served in this process, in front of a backend that records what it was sent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from selfmoa.app import ServeOptions, create_app
from selfmoa.host import Optillm
from selfmoa.metrics import Metrics
from selfmoa.telemetry import Telemetry
from selfmoa.testing.live import free_port
from selfmoa.tracing import CONFIGURED, Tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
ASK = [{"role": "user", "content": "What is 2 + 2?"}]


class Recorder:
    """An OpenAI-compatible backend on a thread of its own that answers "4" and keeps the headers
    of every call."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.port = free_port()
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, daemon=True).start()
        assert self.ready.wait(10)

    async def _chat(self, request: web.Request) -> web.Response:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        body = await request.json()
        n = int(body.get("n") or 1)
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": i, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}
                        for i in range(n)],
            "usage": {"prompt_tokens": 17, "completion_tokens": 3 * n, "total_tokens": 17 + 3 * n}})

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def traced(exporter: InMemorySpanExporter) -> Iterator[tuple[str, Recorder]]:
    """The app in this process, traced into `exporter`; optillm's module settings put back after."""
    recorder = Recorder()
    server_module = Optillm.load().server
    saved = (dict(server_module.server_config), dict(server_module.plugin_approaches), server_module.get_config)
    patched = pytest.MonkeyPatch()
    patched.setenv("OPENAI_API_KEY", "sk-traced-upstream-0123456789")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    port = free_port()
    app = create_app(ServeOptions(["--base-url", f"http://127.0.0.1:{recorder.port}/v1"]),
                     telemetry=Telemetry(Metrics(), Tracing(provider)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.should_exit = True
        thread.join(10)
        patched.undo()
        server_module.server_config.clear()
        server_module.server_config.update(saved[0])
        server_module.plugin_approaches.clear()
        server_module.plugin_approaches.update(saved[1])
        server_module.get_config = saved[2]


def test_a_request_span_continues_the_callers_trace_with_a_span_per_backend_call(
        traced: tuple[str, Recorder], exporter: InMemorySpanExporter) -> None:
    url, recorder = traced
    exporter.clear()
    recorder.headers.clear()
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": "self_moa-m", "messages": ASK, "moa": {"samples": 3}},
        headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01", "x-request-id": "traced-1",
                 "Authorization": "Bearer sk-traced-upstream-0123456789"})
    assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.kind == SpanKind.SERVER]
    calls = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert format(request.context.trace_id, "032x") == TRACE_ID  # the caller's trace, continued
    assert request.parent is not None and format(request.parent.span_id, "016x") == CALLER_SPAN
    assert request.attributes["selfmoa.request_id"] == "traced-1"
    assert request.attributes["selfmoa.approach"] == "self_moa"
    assert request.attributes["http.response.status_code"] == 200
    assert sorted(s.attributes["selfmoa.kind"] for s in calls) == ["aggregation", "proposal"]
    for span in calls:
        attributes: Any = span.attributes
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.request.model"] == "m"
        assert attributes["gen_ai.usage.input_tokens"] == 17 and attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["selfmoa.approach"] == "self_moa" and attributes["selfmoa.round"] == 1
        assert attributes["selfmoa.raced"] is False and attributes["selfmoa.outcome"] == "ok"
    sent = {h["traceparent"].split("-")[2]: h for h in recorder.headers}  # what each backend call carried
    assert {format(s.context.span_id, "016x") for s in calls} == set(sent)
    assert all(h["traceparent"].split("-")[1] == TRACE_ID and h["x-request-id"] == "traced-1"
               for h in sent.values())


def test_a_plain_call_and_an_optillm_approach_are_traced_too(traced: tuple[str, Recorder],
                                                             exporter: InMemorySpanExporter) -> None:
    url, recorder = traced
    for model, kind in (("m", "plain"), ("re2-m", "optillm")):
        exporter.clear()
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": ASK}, timeout=30,
                              headers={"Authorization": "Bearer sk-traced-upstream-0123456789"})
        assert response.status_code == 200, response.text
        calls = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
        assert calls and {s.attributes["selfmoa.kind"] for s in calls} == {kind}


def test_without_otel_settings_there_is_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIGURED:
        monkeypatch.delenv(name, raising=False)
    assert Tracing.from_environment() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert Tracing.from_environment() is not None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Tracing.from_environment() is None
