"""The server's `hedging:` settings: when a call that has not answered is raced by an identical
one, and how many such calls a request may make. A raced call is paid for, so its count comes out
of the server's `caps.calls` like any other call: a request never gets more raced calls than its
planned calls leave room for under the cap (nor more than `max_extra_calls`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from selfmoa.approaches import Hedging


class HedgingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    enabled: bool = True
    after_usual: float = Field(default=3.0, ge=1)  # x the endpoint+model's usual (median) answer time
    after_share: float = Field(default=0.5, gt=0, le=1)  # of the time the call had left, at the latest
    min_delay: float = Field(default=0.5, ge=0)  # seconds; never sooner
    max_extra_calls: int = Field(default=4, ge=0)  # raced calls per request (per run of a request's `n`)

    def policy(self, *, planned: int, runs: int, cap: int) -> Hedging:
        """The hedging of one run of a request that plans `planned` calls, `runs` times (its `n`)."""
        room = max(0, cap // max(1, runs) - planned)
        return Hedging(enabled=self.enabled and room > 0, after_usual=self.after_usual,
                       after_share=self.after_share, min_delay=self.min_delay,
                       max_extra=min(self.max_extra_calls, room))
