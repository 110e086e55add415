"""How `make reliability` sorts a response into exactly one column (see `reliability.py`): the
checks a 200 must pass to count as an answer built from real samples, and those an error status
must pass to count as a clear error."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from selfmoa.sim import extract_answer
from selfmoa.testing.hostile import BODY
from selfmoa.testing.live import CLIENT_KEY

UPSTREAM_KEY = "sk-upstream-secret-0123456789"  # what tests.live.Proxy puts in OPENAI_API_KEY
HUNG_AFTER = 0.5  # seconds past the deadline after which a request counts as hung
FAILURE_WORDS = re.compile(r"HTTP \d{3}|connection error|deadline|no answer|abandoned|timed out|truncated|empty")


@dataclass
class Request:
    """One request of a scenario: its body, and what a clear answer or error must mention."""

    body: Any
    slug: str = ""
    models: tuple[str, ...] = ()
    field: str | None = None  # a malformed body: the field its 400 must name
    samples: int | None = None  # when set, the final aggregation must have read this many candidates


@dataclass
class Tally:
    requests: int = 0
    succeeded: int = 0
    clear: int = 0
    hung: int = 0
    wrong: int = 0
    refusals: int = 0  # backend calls answered with a 400 (a refused parameter)
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else math.nan

    def add(self, column: str, latency: float, example: str = "") -> None:
        self.requests += 1
        self.latencies.append(latency)
        setattr(self, column, getattr(self, column) + 1)
        if example and len(self.examples) < 3 and column != "succeeded":
            self.examples.append(f"{column}: {example}")


def judge_answer(response: httpx.Response, request: Request, calls: list[dict[str, Any]]) -> str | None:
    """None when a 200 is a sound answer (its final aggregation read only complete candidates,
    and it is one of theirs); else what is wrong with it."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "a 200 without an answer"
    answer = extract_answer(content or "")
    if answer is None:
        return f"a 200 without a final answer: {content!r:.120}"
    trace = response.json().get("selfmoa") or {}
    if trace.get("fallback"):
        return judge_traced(content, trace)
    aggregations = [c for c in calls if c["status"] == 200 and c["candidates"]]
    if not aggregations:
        return "no aggregation call found for this request"
    final = max(aggregations, key=lambda c: c["ended"] or 0)
    prompt = "\n".join(str(m.get("content")) for m in final["messages"])
    candidates = re.findall(r'<candidate id="\d+"[^>]*>\n(.*?)\n</candidate>', prompt, re.S)
    shown = [extract_answer(text) for text in candidates]
    if None in shown:
        return "a candidate without a final answer was aggregated"
    if answer not in shown:
        return f"answer {answer!r} is none of the candidates' {sorted(set(map(str, shown)))}"
    if request.samples is not None and final["candidates"] != request.samples:
        return f"aggregated {final['candidates']} candidates, not {request.samples}"
    return None


def judge_traced(content: str | None, trace: dict[str, Any]) -> str | None:
    """None when an answer comes from the request's own proposals (its trace): one of their final
    answers, or, where the aggregation gave nothing usable, one of them verbatim."""
    answer = extract_answer(content or "")
    if answer is None:
        return f"a 200 without a final answer: {content!r:.120}"
    proposals = [p["text"] for p in trace.get("proposals", [])]
    if trace.get("fallback"):
        return None if content in proposals else "a fallback answer that is none of the proposals"
    if answer not in {extract_answer(text) for text in proposals}:
        return f"answer {answer!r} is none of the proposals' answers"
    return None


def judge_error(response: httpx.Response, request: Request) -> str | None:
    """None when an error response is clear; else what is unclear about it."""
    text = response.text
    if CLIENT_KEY in text or UPSTREAM_KEY in text or "Traceback" in text:
        return "a key or a traceback in the error"
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} without an OpenAI-shaped error: {text[:120]}"
    if request.field is not None:
        if request.field == BODY:
            named = "body" in message
        else:
            named = error.get("param") == request.field and request.field in message
        if response.status_code == 400 and named:
            return None
        return f"HTTP {response.status_code} not naming {request.field}: {message[:120]}"
    if response.status_code < 500 and response.status_code != 429:
        return f"HTTP {response.status_code} for a backend failure: {message[:120]}"
    if not message.startswith(f"{request.slug}: "):
        return f"the approach is not named: {message[:120]}"
    if not any(model in message for model in request.models) or not FAILURE_WORDS.search(message):
        return f"the model or the backend's answer is not named: {message[:160]}"
    return None


def message_of(response: httpx.Response) -> str:
    try:
        return f"HTTP {response.status_code} {str(response.json()['error']['message'])[:200]!r}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"
