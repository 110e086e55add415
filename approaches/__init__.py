"""The algorithms of "Rethinking Mixture-of-Agents" (Li et al., 2025) over an OpenAI-compatible client.

Free of optillm and Flask: a `Recipe` says what to run, a `Caller` makes the calls through the
clients it is given, and `run_moa` returns an `Outcome` with the answer and its proposals.
"""

from .calls import BackendMemory, Caller, Deadline, RetryPolicy
from .errors import (
    BackendError,
    ContextTooLong,
    DeadlineExceeded,
    NotEnoughProposals,
    ParameterRefused,
    SelfMoAError,
)
from .moa import max_calls, run_moa
from .seq import rounds_needed
from .types import DEFAULT_ENDPOINT, Failure, Outcome, Proposer, Recipe, Sample

__all__ = [
    "DEFAULT_ENDPOINT",
    "BackendError",
    "BackendMemory",
    "Caller",
    "ContextTooLong",
    "Deadline",
    "DeadlineExceeded",
    "Failure",
    "NotEnoughProposals",
    "Outcome",
    "ParameterRefused",
    "Proposer",
    "Recipe",
    "RetryPolicy",
    "Sample",
    "SelfMoAError",
    "max_calls",
    "rounds_needed",
    "run_moa",
]
