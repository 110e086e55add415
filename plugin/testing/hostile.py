"""A catalogue of malformed chat requests, each with the field its 400 must name, and the server
configuration (caps) it is written against. `tests/test_hostile_input.py` checks every answer;
`benchmarks/reliability.py` replays it many times over and watches the proxy's memory."""

from __future__ import annotations

from typing import Any

SERVER_CONFIG = """
defaults:
  timeout: 20
presets:
  duo:
    proposers: [sim-strong, sim-medium]
caps:
  samples: 80
  layers: 3
  calls: 200
  timeout: 60
  message_chars: 20000
"""
CAPS = {"samples": 80, "layers": 3, "calls": 200, "message_chars": 20000}

ASK = [{"role": "user", "content": "What is the capital of France?"}]
SELF = "self_moa-sim-strong"
MIXED = "mixed_moa-sim-strong"
BODY = "body"  # the expected field when the body itself is not a JSON object
KEYLIKE = "sk-attacker-supplied-0123456789"


_NO_MOA = object()


def case(name: str, field: str, moa: Any = _NO_MOA, *, model: str = SELF, raw: str | None = None,
         drop: tuple[str, ...] = (), **body: Any) -> tuple[str, str, Any]:
    """(name, field the 400 must name, request body: a dict, or raw text when `raw` is given)."""
    if raw is not None:
        return name, field, raw
    request: dict[str, Any] = {"model": model, "messages": ASK, **body}
    if moa is not _NO_MOA:
        request["moa"] = moa
    for key in drop:
        request.pop(key, None)
    return name, field, request


MALFORMED: list[tuple[str, str, Any]] = [
    # the moa object itself
    case("moa-string", "moa", "fast"),
    case("moa-list", "moa", [1, 2]),
    case("moa-number", "moa", 3),
    case("moa-null", "moa", None),
    case("moa-unknown-key", "moa.sample", {"sample": 3}),
    case("moa-base-url", "moa.base_url", {"base_url": "http://attacker.example/v1"}),
    case("moa-api-key", "moa.api_key", {"api_key": KEYLIKE}),
    case("moa-endpoint", "moa.endpoint", {"endpoint": "default"}),
    case("proposer-endpoint", "moa.proposers[0].endpoint",
         {"proposers": [{"model": "sim-strong", "endpoint": "http://attacker.example/v1"}]}, model=MIXED),
    case("aggregator-routed", "moa.aggregator", {"aggregator": {"model": "sim-strong", "endpoint": "default"}}),
    # wrong types and values
    case("samples-string", "moa.samples", {"samples": "six"}),
    case("samples-zero", "moa.samples", {"samples": 0}),
    case("samples-negative", "moa.samples", {"samples": -4}),
    case("samples-float", "moa.samples", {"samples": 2.5}),
    case("samples-bool", "moa.samples", {"samples": True}),
    case("layers-zero", "moa.layers", {"layers": 0}),
    case("temperature-string", "moa.temperature", {"temperature": "hot"}),
    case("temperature-range", "moa.temperature", {"temperature": 3.5}),
    case("max-tokens-zero", "moa.max_tokens", {"max_tokens": 0}),
    case("mode-unknown", "moa.mode", {"mode": "vote"}),
    case("window-one", "moa.window", {"window": 1}),
    case("slots-not-below-window", "moa.synthesis_slots", {"window": 4, "synthesis_slots": 4}),
    case("min-samples-above-samples", "moa.min_samples", {"samples": 2, "min_samples": 3}),
    case("timeout-negative", "moa.timeout", {"timeout": -1}),
    case("timeout-string", "moa.timeout", {"timeout": "soon"}),
    case("grace-negative", "moa.grace", {"grace": -0.5}),
    case("include-reasoning-string", "moa.include_reasoning", {"include_reasoning": "yes"}),
    case("preset-unknown", "moa.preset", {"preset": "turbo"}),
    case("preset-key-like", "moa.preset", {"preset": KEYLIKE}),
    case("preset-list", "moa.preset", {"preset": ["duo"]}),
    case("proposers-missing", "moa.proposers", {}, model=MIXED),
    case("proposers-empty", "moa.proposers", {"proposers": []}, model=MIXED),
    case("proposers-string", "moa.proposers", {"proposers": "sim-strong"}, model=MIXED),
    case("proposer-without-model", "moa.proposers[0].model", {"proposers": [{"samples": 2}]}, model=MIXED),
    case("proposer-samples-zero", "moa.proposers[0].samples", {"proposers": [{"model": "sim-weak", "samples": 0}]},
         model=MIXED),
    # oversize: over the server's caps
    case("samples-over-cap", "moa.samples", {"samples": CAPS["samples"] + 1}),
    case("layers-over-cap", "moa.layers", {"layers": CAPS["layers"] + 1}),
    case("calls-over-cap", "moa.samples", {"samples": 70, "layers": 3}),
    case("timeout-over-cap", "moa.timeout", {"timeout": 3600}),
    case("repeats-over-calls-cap", "n", {"samples": 20}, n=10),
    case("message-over-cap", "messages", messages=[{"role": "user", "content": "x" * (CAPS["message_chars"] + 1)}]),
    # messages
    case("messages-missing", "messages", drop=("messages",)),
    case("messages-empty", "messages", messages=[]),
    case("messages-string", "messages", messages="What is the capital of France?"),
    case("messages-null", "messages", messages=None),
    case("message-not-an-object", "messages[0]", messages=["hello"]),
    case("message-unknown-role", "messages[0].role", messages=[{"role": "wizard", "content": "hi"}]),
    case("message-without-role", "messages[0].role", messages=[{"content": "hi"}]),
    case("message-content-number", "messages[0].content", messages=[{"role": "user", "content": 42}]),
    case("second-message-bad", "messages[1].role", messages=[*ASK, {"role": 7, "content": "hi"}]),
    # the request's own OpenAI fields
    case("n-string", "n", n="3"),
    case("n-zero", "n", n=0),
    case("n-null", "n", n=None),
    case("stream-string", "stream", stream="yes"),
    case("temperature-request", "temperature", temperature="warm"),
    case("top-p-range", "top_p", top_p=1.5),
    case("max-tokens-string", "max_tokens", max_tokens="many"),
    case("max-completion-tokens-negative", "max_completion_tokens", max_completion_tokens=-5),
    case("stop-number", "stop", stop=7),
    case("seed-string", "seed", seed="abc"),
    case("response-format-string", "response_format", response_format="json"),
    case("model-number", "model", model=5),  # type: ignore[arg-type]
    case("approach-list", "optillm_approach", model="sim-strong", optillm_approach=["self_moa"]),
    # not a JSON object at all
    case("body-not-json", BODY, raw="{not json"),
    case("body-array", BODY, raw="[1, 2, 3]"),
    case("body-string", BODY, raw='"hello"'),
    case("body-empty", BODY, raw=""),
]


