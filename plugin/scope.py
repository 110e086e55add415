"""The scope of one request: when it arrived (its deadlines count from then). Passed explicitly
from the route to everything that serves the request; nothing is kept in a side channel."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from selfmoa.approaches import Deadline


@dataclass(frozen=True)
class RequestScope:
    arrived: float = field(default_factory=time.monotonic)
    request_id: str | None = None

    def deadline(self, seconds: float) -> Deadline:
        """`seconds` after the request arrived (the server's own work for it counts too)."""
        return Deadline(seconds - (time.monotonic() - self.arrived))

    def elapsed(self) -> float:
        return time.monotonic() - self.arrived
