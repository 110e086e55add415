"""Asking the endpoint: one chat completion per task and approach, read leniently.

The endpoint is optillm or `selfmoa serve`, whose replies vary: optillm's own approaches return
only `usage.completion_tokens`; `selfmoa serve` returns full usage and, asked with
`moa.trace: true`, a `selfmoa` object listing every proposal. Missing fields become None (and
make the run's cost "incomplete"), never a crash. An endpoint that refuses `moa.trace` (an older
selfmoa) is asked again without it, once per approach, and remembered.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

OURS = frozenset({"self_moa", "mixed_moa", "self_moa_seq", "mixed_moa_seq"})
"""Approaches answered by selfmoa: their body carries `moa.trace` and their replies a trace."""
ALIAS = "@"
"""`NAME@LABEL` is approach NAME, requested as NAME-M, reported (rows, summary, report) as NAME@LABEL:
the same approach run twice with different `moa` objects in one run."""
SIM_OWNER = "selfmoa-sim"
_LENIENT = ConfigDict(extra="ignore", frozen=True)


class PromptDetails(BaseModel):
    model_config = _LENIENT
    cached_tokens: int | None = None


class Usage(BaseModel):
    model_config = _LENIENT
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None


class ModelUsage(BaseModel):
    model_config = _LENIENT
    calls: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


class Proposal(BaseModel):
    model_config = _LENIENT
    model: str | None = None
    text: str | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None


class EarlyExit(BaseModel):
    """Why an answer skipped the aggregation (`moa.agree`): `{"reason": "agree", "share": 0.83}`."""

    model_config = _LENIENT
    reason: str | None = None
    share: float | None = None


def _early_exit(value: Any) -> Any:
    """The trace's `early_exit` as the harness reads it, never a reason to drop the reply: a bare
    reason (`"agree"`) or `true` is an exit without its share, a share that is not a number is
    unknown, and anything else (`false`, a number) is no exit."""
    if isinstance(value, str):
        return {"reason": value}
    if value is True:
        return {}
    if not isinstance(value, dict):
        return None
    share = value.get("share")
    known = isinstance(share, int | float) and not isinstance(share, bool)
    return {"reason": value.get("reason") if isinstance(value.get("reason"), str) else None,
            "share": share if known else None}


class Trace(BaseModel):
    """The `selfmoa` object of a traced reply (only the fields the harness reads)."""

    model_config = _LENIENT
    aggregator: str | None = None
    proposals: list[Proposal] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)
    calls: int | None = None
    usage_by_model: dict[str, ModelUsage] | None = None
    early_exit: EarlyExit | None = None

    _lenient_early_exit = field_validator("early_exit", mode="before")(_early_exit)


class _Message(BaseModel):
    model_config = _LENIENT
    content: str | None = None


class _Choice(BaseModel):
    model_config = _LENIENT
    message: _Message


class Reply(BaseModel):
    model_config = _LENIENT
    choices: list[_Choice] = Field(min_length=1)
    usage: Usage | None = None
    selfmoa: Trace | None = None


@dataclass(frozen=True)
class Answer:
    """One approach's answer to one task, or the error it ended with."""

    output: str | None
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    trace: Trace | None = None
    error: str | None = None
    cached_tokens: int | None = None  # prompt tokens a backend's cache served, where the reply says


def base_approach(approach: str) -> str:
    """The approach an `--approaches` entry asks for: `self_moa` for `self_moa@agree`."""
    return approach.partition(ALIAS)[0]


def is_ours(approach: str) -> bool:
    """Whether selfmoa answers it (aliases included): traced, with quality, diversity, early exits."""
    return base_approach(approach) in OURS


def request_model(approach: str, model: str) -> str:
    """optillm's routing by prefix: `self_moa-M` (for `self_moa@LABEL` too); the plain model for `none`."""
    name = base_approach(approach)
    return model if name == "none" else f"{name}-{model}"


def is_loopback(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def make_client(url: str, api_key: str, timeout: float) -> openai.OpenAI:
    """The openai client: its own retries of 429/5xx (which honour `x-should-retry`); no HTTP proxy for loopback."""
    http = openai.DefaultHttpxClient(trust_env=not is_loopback(url), timeout=timeout)
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=2, timeout=timeout, http_client=http)


def describe(error: openai.OpenAIError) -> str:
    """An error as one line: the HTTP status and the server's message."""
    if isinstance(error, openai.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        message = body.get("message") or error.message
        return f"HTTP {error.status_code}: {message}"[:500]
    return f"{type(error).__name__}: {error}"[:500]


def _refuses_trace(error: openai.OpenAIError) -> bool:
    return isinstance(error, openai.APIStatusError) and error.status_code in (400, 422, 500) \
        and "moa.trace" in describe(error)


class Endpoint:
    """The requests of one run: the model, per-approach `moa` settings and the seed are fixed.

    `moa` is keyed by the approach as reported (`self_moa@agree` has its own settings, not
    `self_moa`'s)."""

    def __init__(self, client: openai.OpenAI, model: str, moa: dict[str, dict[str, Any]], seed: int | None) -> None:
        self.client, self.model, self.moa, self.seed = client, model, moa, seed
        self._untraced: set[str] = set()
        self._lock = threading.Lock()

    def _moa(self, approach: str) -> dict[str, Any] | None:
        settings = dict(self.moa.get(approach, {}))
        with self._lock:
            traced = is_ours(approach) and approach not in self._untraced
        return {**settings, "trace": True} if traced else settings or None

    def _post(self, model: str, messages: list[dict[str, Any]], moa: dict[str, Any] | None,
              **fields: Any) -> Reply:
        extra: dict[str, Any] = {"moa": moa} if moa is not None else {}
        if self.seed is not None:
            extra["seed"] = self.seed
        raw = self.client.chat.completions.with_raw_response.create(
            model=model, messages=messages, extra_body=extra or None, **fields)  # type: ignore[arg-type]
        try:
            return Reply.model_validate(json.loads(raw.text))
        except (ValueError, ValidationError) as error:
            raise openai.APIError(f"unreadable reply: {str(error)[:200]}", raw.http_request, body=None) from None

    def ask(self, approach: str, messages: list[dict[str, Any]]) -> Answer:
        """The approach's answer; an error is recorded in the Answer, not raised."""
        started = time.perf_counter()
        try:
            reply = self._ask(approach, messages)
        except openai.OpenAIError as error:
            return Answer(None, time.perf_counter() - started, error=describe(error))
        usage = reply.usage or Usage()
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
        return Answer(reply.choices[0].message.content or "", time.perf_counter() - started,
                      usage.prompt_tokens, usage.completion_tokens, reply.selfmoa, cached_tokens=cached)

    def _ask(self, approach: str, messages: list[dict[str, Any]]) -> Reply:
        moa = self._moa(approach)
        try:
            return self._post(request_model(approach, self.model), messages, moa)
        except openai.OpenAIError as error:
            if not (moa and moa.get("trace") and _refuses_trace(error)):
                raise
        with self._lock:
            self._untraced.add(approach)
        return self._post(request_model(approach, self.model), messages, self._moa(approach))

    def complete(self, model: str, prompt: str) -> str:
        """A plain, greedy completion (the judge's); errors raise openai.OpenAIError."""
        reply = self._post(model, [{"role": "user", "content": prompt}], None, temperature=0)
        return reply.choices[0].message.content or ""

    @property
    def untraced(self) -> set[str]:
        """Approaches whose endpoint refused `moa.trace`: their quality and diversity are unknown."""
        with self._lock:
            return set(self._untraced)


def is_simulator(client: openai.OpenAI, model: str) -> bool:
    """Whether `model`, as the endpoint lists it, is owned by `selfmoa sim` (a proxy relays the list)."""
    try:
        listed = client.models.list()
    except openai.OpenAIError:
        return False
    return any(entry.id == model and getattr(entry, "owned_by", None) == SIM_OWNER for entry in listed.data)
