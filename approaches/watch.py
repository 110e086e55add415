"""Who watches a run's backend calls (metrics, traces): the core says what each call was and how it
ended, and sends the headers the watcher gives it (a trace context); nothing more. By default
nobody watches, at no cost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .types import Usage

# How a backend call ended, as a watcher hears it. A raced call (hedging's duplicate) is `raced`
# whatever became of it; the call it raced is `ok`, `error`, or `cancelled` if the race was lost.
OUTCOMES = ("ok", "error", "raced", "cancelled")


class Watch(Protocol):
    headers: Mapping[str, str]  # sent with the call

    def end(self, outcome: str, usage: Usage | None) -> None: ...


class Watcher(Protocol):
    def start(self, endpoint: str, model: str, kind: str, *, raced: bool, step: int) -> Watch:
        """A call of `kind` (`proposal`, `aggregation`) is about to go out; `step` is its layer
        (proposals) or its Seq round (aggregations)."""
        ...


class _Unwatched:
    headers: Mapping[str, str] = {}

    def end(self, outcome: str, usage: Usage | None) -> None:
        return None


class Unwatched:
    """The watcher of runs nobody watches."""

    _watch = _Unwatched()

    def start(self, endpoint: str, model: str, kind: str, *, raced: bool, step: int) -> Watch:
        return self._watch


UNWATCHED = Unwatched()
