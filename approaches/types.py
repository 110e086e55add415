"""Plain values the algorithms pass around: what to run (`Recipe`) and what came back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]
Mode = Literal["synthesize", "select"]
DEFAULT_ENDPOINT = "default"


@dataclass(frozen=True)
class Proposer:
    """`samples` proposals from `model` on the named endpoint (a Self-MoA run has exactly one)."""

    model: str
    samples: int
    endpoint: str = DEFAULT_ENDPOINT


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Everything one MoA request does, resolved and validated before any call is made."""

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
    min_samples: int = 1
    include_reasoning: bool = False
    context_budget: int | None = None
    timeout: float = 120.0
    grace: float | None = None
    final_params: dict[str, Any] = field(default_factory=dict)

    @property
    def total_samples(self) -> int:
        return sum(p.samples for p in self.proposers)


@dataclass(frozen=True)
class Sample:
    """One usable proposal: its answer text (reasoning removed unless asked for) and its cost."""

    text: str
    model: str
    completion_tokens: int = 0


@dataclass(frozen=True)
class Failure:
    """A proposal that could not be used, and why (shown to the user when too few remain)."""

    model: str
    reason: str
    timed_out: bool = False


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
    """The answer and the trace of how it was reached (proposals are kept for A/B analysis)."""

    text: str
    completion_tokens: int
    calls: int
    rounds: int
    sequential: bool
    proposals: list[Sample]
    failures: list[Failure]
