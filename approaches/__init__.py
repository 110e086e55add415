"""The algorithms of "Rethinking Mixture-of-Agents" (Li et al., 2025) over a model-server `Backend`.

Free of optillm and Flask: a `Recipe` says what to run, a `Caller` makes the calls through the
backends it is given, and `moa_events` reports the run as events (`run_moa` returns its `Outcome`).
"""

from .backend import Backend, Chunk, Completion, Delta, OpenAIBackend
from .calls import BackendMemory, Caller, Deadline, RetryPolicy, Stop
from .errors import (
    Abandoned,
    BackendError,
    ContextTooLong,
    DeadlineExceeded,
    NotEnoughProposals,
    ParameterRefused,
    SelfMoAError,
    StreamInterrupted,
    TransientError,
)
from .events import AnswerDelta, Done, Event, ProposalsArrived, RoundDone
from .moa import max_calls, moa_events, run_moa
from .seq import rounds_needed
from .types import (
    DEFAULT_ENDPOINT,
    Candidate,
    Choice,
    Failure,
    Hedging,
    Outcome,
    Proposer,
    Recipe,
    Sample,
    Usage,
)
from .variants import VARIANTS, Variant

__all__ = [
    "DEFAULT_ENDPOINT",
    "VARIANTS",
    "Abandoned",
    "AnswerDelta",
    "Backend",
    "BackendError",
    "BackendMemory",
    "Caller",
    "Candidate",
    "Choice",
    "Chunk",
    "Completion",
    "ContextTooLong",
    "Deadline",
    "DeadlineExceeded",
    "Delta",
    "Done",
    "Event",
    "Failure",
    "Hedging",
    "NotEnoughProposals",
    "OpenAIBackend",
    "Outcome",
    "ParameterRefused",
    "Proposer",
    "ProposalsArrived",
    "Recipe",
    "RetryPolicy",
    "RoundDone",
    "Sample",
    "SelfMoAError",
    "Stop",
    "StreamInterrupted",
    "TransientError",
    "Usage",
    "Variant",
    "max_calls",
    "moa_events",
    "rounds_needed",
    "run_moa",
]
