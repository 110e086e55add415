"""The server's `hedging:` settings: when a call that has not answered is raced by an identical
one, how many such calls a request may make, and what share of the process's calls in flight may
be raced ones. A raced call is paid for, so its count comes out of the server's `caps.calls` like
any other call: a request never gets more raced calls than its planned calls leave room for under
the cap (nor more than `max_extra_calls`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from selfmoa.approaches import Hedging

_DEFAULT = Hedging()  # the defaults are the algorithm's own, defined there once


class HedgingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    enabled: bool = _DEFAULT.enabled
    after_usual: float = Field(default=_DEFAULT.after_usual, ge=1)  # x the endpoint+model's usual answer time
    after_share: float = Field(default=_DEFAULT.after_share, gt=0, le=1)  # of the time left, at the latest
    min_delay: float = Field(default=_DEFAULT.min_delay, ge=0)  # seconds; never sooner
    max_extra_calls: int = Field(default=_DEFAULT.max_extra, ge=0)  # raced calls per run of a request
    max_share: float = Field(default=_DEFAULT.max_share, gt=0, le=1)  # of the process's calls in flight

    def policy(self, *, planned: int, runs: int, cap: int) -> Hedging:
        """The hedging of one run of a request that plans `planned` calls, `runs` times (its `n`)."""
        room = max(0, cap // max(1, runs) - planned)
        return Hedging(enabled=self.enabled and room > 0, after_usual=self.after_usual,
                       after_share=self.after_share, min_delay=self.min_delay,
                       max_extra=min(self.max_extra_calls, room), max_share=self.max_share)
