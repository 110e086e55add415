"""The request scope `selfmoa serve` opens for each chat request: when it arrived (deadlines count
from then) and what failed in it (so a failure optillm turns into a 500 is answered with its own
status). Our own route receives it as an argument; on optillm's route, where optillm calls the
plugin, it is found in the host's request context, the one place it is kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from selfmoa.approaches import Deadline, SelfMoAError


@dataclass
class RequestScope:
    arrived: float = field(default_factory=time.monotonic)
    errors: list[SelfMoAError] = field(default_factory=list)
    upstream_error: Exception | None = None

    def deadline(self, seconds: float) -> Deadline:
        """`seconds` after the request arrived (optillm's own set-up time counts too)."""
        return Deadline(seconds - (time.monotonic() - self.arrived))


def open_scope() -> RequestScope:
    from flask import g

    scope = RequestScope()
    g.selfmoa_scope = scope
    return scope


def current_scope() -> RequestScope | None:
    """The scope of the request being handled; None outside `selfmoa serve` (stock optillm)."""
    from flask import g, has_request_context

    if not has_request_context():
        return None
    scope = g.get("selfmoa_scope")
    return scope if isinstance(scope, RequestScope) else None
