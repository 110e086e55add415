"""Plain values the algorithms pass around: what to run (`Recipe`) and what came back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]
Mode = Literal["synthesize", "select"]
# Where an aggregation-style prompt puts its instructions and candidates (see `prompts.PLACEMENTS`).
Placement = Literal["system", "last_user", "auto"]
DEFAULT_ENDPOINT = "default"
DEFAULT_SAMPLES = 6  # proposals per proposer model: the paper's setting


@dataclass(frozen=True)
class Proposer:
    """`samples` proposals from `model` on the named endpoint (a Self-MoA run has exactly one)."""

    model: str
    samples: int
    endpoint: str = DEFAULT_ENDPOINT


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Everything one MoA request does, resolved and validated before any call is made.

    `final_params` are the request's own fields that shape the answer the user sees (sampling,
    format); `shared_params` reach every call, proposers included (tools, logprobs, backend knobs):
    a proposer that cannot see the tools cannot propose calling one.
    """

    proposers: tuple[Proposer, ...]
    aggregator: str
    aggregator_endpoint: str = DEFAULT_ENDPOINT
    temperature: float = 0.7
    max_tokens: int | None = None
    layers: int = 1
    sequential: bool = False
    window: int = 6
    synthesis_slots: int = 3
    mode: Mode = "synthesize"
    placement: Placement = "system"
    min_samples: int = 1
    include_reasoning: bool = False
    context_budget: int | None = None
    timeout: float = 120.0
    grace: float | None = None
    final_params: dict[str, Any] = field(default_factory=dict)
    shared_params: dict[str, Any] = field(default_factory=dict)
    answer: str = "exact"  # how a proposal's final answer is read for agreement (`agreement.py`)
    agree: float | None = None  # this share of the proposals agreeing skips the aggregation
    first: int | None = None  # draw this many samples first; the rest only if they do not agree

    @property
    def total_samples(self) -> int:
        return sum(p.samples for p in self.proposers)


@dataclass(frozen=True, kw_only=True)
class Hedging:
    """When a call that has not answered is raced by an identical one. A raced call is paid for.

    A call should have answered after `after_usual` times what its endpoint+model usually takes
    (the median of its recent answers, remembered per process), and at the latest after
    `after_share` of the time it had left; never sooner than `min_delay` seconds. A request makes
    at most `max_extra` raced calls in all, and the process races at most `max_share` of its calls
    in flight (at least one): when every call is slow at once, the backend is loaded, and
    duplicates would only load it further.
    """

    enabled: bool = True
    after_usual: float = 3.0
    after_share: float = 0.5
    min_delay: float = 0.5
    max_extra: int = 4
    max_share: float = 0.5

    def delay(self, usual: float | None, time_left: float) -> float:
        """Seconds an attempt may stay unanswered on the wire before it is raced."""
        wait = self.after_share * time_left
        if usual is not None:
            wait = min(wait, self.after_usual * usual)
        return max(self.min_delay, wait)


@dataclass
class Usage:
    """Token counts of one call or a sum of calls (`cached_tokens`: prompt tokens a cache served;
    `reasoning_tokens`: completion tokens spent reasoning, where the backend reports them)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass(frozen=True)
class Choice:
    """One reply of a model: text and/or tool calls (OpenAI form), and how it ended."""

    content: str = ""
    reasoning: str | None = None
    finish_reason: str | None = "stop"
    tool_calls: tuple[dict[str, Any], ...] = ()
    logprobs: dict[str, Any] | None = None

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class Candidate:
    """What the aggregator reads of one reply (`text`), and the reply itself, to return verbatim."""

    text: str
    choice: Choice

    @property
    def cut_off(self) -> bool:
        return self.choice.cut_off


@dataclass(frozen=True)
class Sample:
    """One usable proposal: its candidate form and its cost."""

    candidate: Candidate
    model: str
    completion_tokens: int = 0

    @property
    def text(self) -> str:
        return self.candidate.text


@dataclass(frozen=True)
class Failure:
    """A proposal that could not be used, and why (shown to the user when too few remain).

    `status` is the backend's HTTP status when it gave one: when every proposal got the same client
    error (a context overflow, an unknown model), the request is answered with it.
    """

    model: str
    reason: str
    timed_out: bool = False
    status: int | None = None
    code: str | None = None
    retry_after: float | None = None


@dataclass
class Batch:
    """What one round of sampling produced: the usable samples and the dropped ones."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def extend(self, other: Batch) -> None:
        self.samples.extend(other.samples)
        self.failures.extend(other.failures)


@dataclass
class Outcome:
    """The answer and the trace of how it was reached (proposals are kept for A/B analysis).

    `fallback` says why the answer is a proposal or an earlier synthesis when the aggregation gave
    nothing usable; None when the aggregator's answer stands. `cleaned` counts the pieces of our
    own markup (fences, instruction clauses) taken out of the answer. `early_exit` says why the
    aggregation was skipped (`{"reason": "agree", "share": ...}`), None when it was not.
    """

    answer: Choice
    usage: Usage
    usage_by_model: dict[str, Usage]
    rounds: int
    sequential: bool
    proposals: list[Sample]
    failures: list[Failure]
    fallback: str | None = None
    cleaned: int = 0
    early_exit: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return self.answer.content

    @property
    def calls(self) -> int:
        return self.usage.calls

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens
