"""The request scope `selfmoa serve` opens for each chat request: when it arrived (deadlines count
from then), what failed in it (so a failure optillm turns into a 500 is answered with its own
status), and its `Stop`, set once the request is answered or has failed: every run of one of our
approaches in it (a branch of a `|` combination too) then stops its backend work. Our own route
receives it as an argument; on optillm's route, where optillm calls the plugin, it is found in
the host's request context, the one place it is kept."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from selfmoa.approaches import Deadline, SelfMoAError, Stop

ARRIVED = "selfmoa.arrived"  # the WSGI environ key `host.py` stamps with the request's arrival


@dataclass
class RequestScope:
    arrived: float = field(default_factory=time.monotonic)
    errors: list[SelfMoAError] = field(default_factory=list)
    upstream_error: Exception | None = None
    stop: Stop = field(default_factory=Stop)

    def deadline(self, seconds: float) -> Deadline:
        """`seconds` after the request arrived (optillm's own set-up time counts too)."""
        return Deadline(seconds - (time.monotonic() - self.arrived))


def open_scope() -> RequestScope:
    """The scope of the request being handled, from when the server received it (the time Flask
    took to dispatch it counts), or from now where nobody stamped its arrival."""
    from flask import g, request

    arrived = request.environ.get(ARRIVED)
    scope = RequestScope(arrived=arrived) if isinstance(arrived, float) else RequestScope()
    g.selfmoa_scope = scope
    return scope


def current_scope() -> RequestScope | None:
    """The scope of the request being handled; None outside `selfmoa serve` (stock optillm)."""
    from flask import g, has_request_context

    if not has_request_context():
        return None
    scope = g.get("selfmoa_scope")
    return scope if isinstance(scope, RequestScope) else None
