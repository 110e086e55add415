"""Errors raised by the algorithms.

    SelfMoAError
    ├── BackendError          a backend call failed for good (status, code and message kept)
    │   ├── TransientError    worth retrying (429, 5xx, timeouts, dropped connections)
    │   ├── ContextTooLong    the prompt did not fit the model's context window
    │   └── ParameterRefused  the backend rejected one request parameter (adaptable)
    ├── NotEnoughProposals    fewer usable proposals than `min_samples`
    ├── StreamInterrupted     the answer's stream broke after part of it was relayed
    └── DeadlineExceeded      the request's deadline passed before an answer was ready

A call whose result is no longer wanted (its race was won, its request answered, failed or given
up by its client) is not an error: its task is cancelled.

`status` is the HTTP status a proxy should answer with: a backend's client error (4xx) keeps its
status, since the same request sent to the plain model would get it too; anything else is 502
(upstream) or 504 (deadline). Messages name the model and what the backend said; never keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .types import Failure


class SelfMoAError(Exception):
    """Base of every error the approaches raise."""

    status = 502
    code: str | None = None
    retry_after: float | None = None


class BackendError(SelfMoAError):
    def __init__(self, model: str, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.model = model
        self.reason = message
        self.backend_status = status
        self.code = code
        if status is not None and 400 <= status < 500:
            self.status = status
        prefix = f"HTTP {status}: " if status else ""
        super().__init__(f"{model}: {prefix}{message}")


class TransientError(BackendError):
    """A failure that may not happen again: retried within the deadline, then raised as is."""

    def __init__(self, model: str, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, timed_out: bool = False) -> None:
        super().__init__(model, message, status=status, code=code)
        self.retry_after = retry_after
        self.timed_out = timed_out


class ContextTooLong(BackendError):
    def __init__(self, model: str, message: str, *, status: int | None = 400, code: str | None = None) -> None:
        super().__init__(model, message, status=status or 400, code=code or "context_length_exceeded")


class ParameterRefused(BackendError):
    """`limit` is the largest value the backend said it accepts, when it said (llama.cpp: `n` <= slots)."""

    def __init__(self, model: str, message: str, *, param: str, status: int | None = 400,
                 code: str | None = None) -> None:
        self.param = param
        found = re.search(r"(?:<=|at most|maximum(?: value)? (?:is|of))\s*(\d+)", message)
        self.limit = int(found.group(1)) if found else None
        super().__init__(model, message, status=status, code=code)


class NotEnoughProposals(SelfMoAError):
    """Too few usable proposals. When every proposal got the same client error, it is that error
    (status, code and the backend's message); 504 when every one was lost to the deadline; else 502."""

    def __init__(self, usable: int, needed: int, failures: Sequence[Failure]) -> None:
        self.failures = list(failures)
        statuses = {f.status for f in self.failures}
        shared = next(iter(statuses)) if len(statuses) == 1 else None
        if self.failures and all(f.timed_out for f in self.failures):
            self.status = 504
        elif shared is not None and 400 <= shared < 500:
            first = self.failures[0]
            self.status, self.code = shared, first.code
            self.retry_after = max((f.retry_after or 0.0 for f in self.failures), default=0.0) or None
            super().__init__(f"{first.model}: {first.reason}")
            return
        reasons = "; ".join(sorted({f"{f.model}: {f.reason}" for f in self.failures})) or "no proposals arrived"
        if self.status == 504:  # say which phase ran out: the aggregation never started
            super().__init__(f"the proposal phase ran out of time: {usable} usable proposal(s) of {needed} "
                             f"needed before the deadline ({reasons})")
            return
        super().__init__(f"{usable} usable proposal(s), {needed} needed ({reasons})")


class DeadlineExceeded(SelfMoAError):
    status = 504


class StreamInterrupted(SelfMoAError):
    """Part of the answer already reached the client: nothing can replace it any more."""

