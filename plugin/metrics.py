"""Prometheus metrics of `selfmoa serve` (`GET /metrics`), right over every `--workers` process:
with PROMETHEUS_MULTIPROC_DIR set (`selfmoa serve` sets it), each worker writes its values there
and every scrape reads them all (prometheus_client's multiprocess mode).

Names and labels are a contract (dashboards and alerts use them):

    selfmoa_requests_total{approach, status}           chat requests, by HTTP status
    selfmoa_request_duration_seconds{approach}          histogram
    selfmoa_time_to_first_token_seconds{approach}       histogram, streamed replies
    selfmoa_in_flight_requests                          gauge, summed over live workers
    selfmoa_backend_calls_total{model, kind, outcome}   kind: proposal, aggregation, plain, optillm
    selfmoa_tokens_total{model, type}                   type: prompt, completion, cached
    selfmoa_fallbacks_total{approach}                   answers that are a proposal (see the README)
    selfmoa_raced_calls_total{model}                    hedging's duplicate calls, each paid for
    selfmoa_refused_requests_total{reason}              503s: over --max-in-flight, or draining

`approach` is ours (`self_moa`, ...), optillm's (`moa`, ...), a combination (`self_moa|moa`) or
`none` (a plain model). Model names come from requests, so a process labels at most
`MODEL_LABELS` of them; the rest are counted as `other`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from selfmoa.approaches import Usage

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
MODEL_LABELS = 200
_DURATIONS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter
        self.registry = own = CollectorRegistry()  # this app's own: several apps in one process do not clash
        self.requests = Counter("selfmoa_requests", "Chat requests, by approach and HTTP status",
                                ["approach", "status"], registry=own)
        self.duration = Histogram("selfmoa_request_duration_seconds", "Chat request duration",
                                  ["approach"], buckets=_DURATIONS, registry=own)
        self.ttft = Histogram("selfmoa_time_to_first_token_seconds", "Time to the first streamed answer token",
                              ["approach"], buckets=_DURATIONS, registry=own)
        self.in_flight = Gauge("selfmoa_in_flight_requests", "Chat requests in flight",
                               multiprocess_mode="livesum", registry=own)
        self.calls = Counter("selfmoa_backend_calls", "Backend calls, by model, kind and outcome",
                             ["model", "kind", "outcome"], registry=own)
        self.tokens = Counter("selfmoa_tokens", "Tokens the backends reported, by model and type",
                              ["model", "type"], registry=own)
        self.fallbacks = Counter("selfmoa_fallbacks", "Answers that fell back to a proposal", ["approach"],
                                 registry=own)
        self.raced = Counter("selfmoa_raced_calls", "Hedging's duplicate calls", ["model"], registry=own)
        self.refused = Counter("selfmoa_refused_requests", "Requests refused with a 503", ["reason"],
                               registry=own)
        self._models: set[str] = set()
        self._lock = threading.Lock()

    def call(self, model: str, kind: str, outcome: str, usage: Usage | None) -> None:
        """One backend call ended (from any thread: optillm's approaches call from theirs)."""
        label = self.model_label(model)
        self.calls.labels(label, kind, outcome).inc()
        if outcome == "raced":
            self.raced.labels(label).inc()
        if usage is not None:
            for kind_of_token, count in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens),
                                         ("cached", usage.cached_tokens)):
                if count:
                    self.tokens.labels(label, kind_of_token).inc(count)

    def model_label(self, model: str) -> str:
        with self._lock:
            if model in self._models or len(self._models) < MODEL_LABELS:
                self._models.add(model)
                return model
        return "other"

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's values where they share a directory."""
        directory = os.environ.get(MULTIPROCESS_ENV)
        if directory:
            _forget_dead_workers(directory)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


def _forget_dead_workers(directory: str) -> None:
    """Workers that died without a word (uvicorn restarts them): their live gauges leave the sums."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1]) if path.stem.rsplit("_", 1)[1].isdigit() else None
        if pid is not None and not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_exited(pid: int) -> None:
    """A worker's live gauges leave the sums when it exits."""
    if os.environ.get(MULTIPROCESS_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
