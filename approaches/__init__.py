"""The algorithms of "Rethinking Mixture-of-Agents" (Li et al., 2025) over a model-server `Backend`.

Free of optillm and Flask: a `Recipe` says what to run, a `Caller` makes the calls through the
backends it is given, and `run` answers as a coroutine that reports events (`moa_events` is the
same run as an async iterator; `run_moa` the synchronous entry).
"""

from .backend import Backend, Chunk, Completion, Delta
from .calls import BackendMemory, Caller, Deadline, RetryPolicy
from .clients import ClientBackend, LiteLLMBackend, ThreadedBackend, backend_for
from .errors import (
    BackendError,
    ContextTooLong,
    DeadlineExceeded,
    NotEnoughProposals,
    ParameterRefused,
    SelfMoAError,
    StreamInterrupted,
    TransientError,
)
from .events import AnswerDelta, Done, Emit, Event, ProposalsArrived, RoundDone
from .moa import max_calls, moa_events, run, run_moa
from .seq import rounds_needed
from .types import (
    DEFAULT_ENDPOINT,
    DEFAULT_SAMPLES,
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
from .wire import WireBackend, new_session

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_SAMPLES",
    "VARIANTS",
    "AnswerDelta",
    "Backend",
    "BackendError",
    "BackendMemory",
    "Caller",
    "Candidate",
    "Choice",
    "Chunk",
    "ClientBackend",
    "Completion",
    "ContextTooLong",
    "Deadline",
    "DeadlineExceeded",
    "Delta",
    "Done",
    "Emit",
    "Event",
    "Failure",
    "Hedging",
    "LiteLLMBackend",
    "NotEnoughProposals",
    "Outcome",
    "ParameterRefused",
    "Proposer",
    "ProposalsArrived",
    "Recipe",
    "RetryPolicy",
    "RoundDone",
    "Sample",
    "SelfMoAError",
    "StreamInterrupted",
    "ThreadedBackend",
    "TransientError",
    "Usage",
    "Variant",
    "WireBackend",
    "backend_for",
    "max_calls",
    "moa_events",
    "new_session",
    "rounds_needed",
    "run",
    "run_moa",
]
