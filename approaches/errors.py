"""Errors raised by the algorithms.

    SelfMoAError
    ├── BackendError          a backend call failed for good (status and message kept)
    │   ├── ContextTooLong    the prompt did not fit the model's context window
    │   └── ParameterRefused  the backend rejected one request parameter (adaptable)
    ├── NotEnoughProposals    fewer usable proposals than `min_samples`
    └── DeadlineExceeded      the request's deadline passed before an answer was ready

Messages name the model and what the backend said; they never carry keys or tracebacks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .types import Failure


class SelfMoAError(Exception):
    """Base of every error the approaches raise; `status` is the HTTP status a proxy should use."""

    status = 502


class BackendError(SelfMoAError):
    def __init__(self, model: str, message: str, *, status: int | None = None) -> None:
        self.model = model
        self.backend_status = status
        prefix = f"HTTP {status}: " if status else ""
        super().__init__(f"{model}: {prefix}{message}")


class ContextTooLong(BackendError):
    status = 400


class ParameterRefused(BackendError):
    """`limit` is the largest value the backend said it accepts, when it said (llama.cpp: `n` <= slots)."""

    def __init__(self, model: str, message: str, *, param: str, status: int | None = 400) -> None:
        self.param = param
        found = re.search(r"(?:<=|at most|maximum(?: value)? (?:is|of))\s*(\d+)", message)
        self.limit = int(found.group(1)) if found else None
        super().__init__(model, message, status=status)


class NotEnoughProposals(SelfMoAError):
    """502, or 504 when every missing proposal was lost to the deadline (a longer timeout may help)."""

    def __init__(self, usable: int, needed: int, failures: Sequence[Failure]) -> None:
        self.failures = list(failures)
        self.status = 504 if failures and all(f.timed_out for f in failures) else 502
        reasons = "; ".join(sorted({f"{f.model}: {f.reason}" for f in failures})) or "no proposals arrived"
        super().__init__(f"{usable} usable proposal(s), {needed} needed ({reasons})")


class DeadlineExceeded(SelfMoAError):
    status = 504
