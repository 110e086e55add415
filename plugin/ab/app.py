"""`selfmoa ab` end to end: tasks -> endpoint (given, or a `selfmoa serve` we start) -> rows -> report.

Returns the exit code: 0 done, 1 when every request failed (the summary is still written),
130 when interrupted (what finished is kept; the same command resumes).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from .cost import PriceError, load_prices
from .endpoint import Endpoint, is_simulator, make_client
from .plots import COST_PLOT, QD_PLOT, plot_accuracy_cost, plot_quality_diversity
from .proxy import DUMMY_KEY, ProxyError, local_proxy
from .report import RunInfo, console_table, table, write_report, write_summary
from .runner import Interrupted, Plan, run
from .store import ResultsFile, StoreError, check_manifest
from .summary import Scope, summarise
from .tasks import TaskError, load_tasks


@dataclass(frozen=True)
class Settings:
    """One run's settings, validated by the command line."""

    tasks: str
    approaches: list[str]
    model: str
    out: Path
    url: str | None = None
    serve_base_url: str | None = None
    moa: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str = "none"
    concurrency: int = 8
    seed: int | None = None
    limit: int | None = None
    judge: str | None = None
    prices: Path | None = None
    timeout: float = 600.0
    command: str = "selfmoa ab"
    progress: bool = True


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so a started proxy is stopped and the resume hint printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _endpoint_url(settings: Settings) -> Iterator[str]:
    if settings.serve_base_url is None:
        assert settings.url is not None
        yield settings.url
        return
    with local_proxy(settings.serve_base_url, settings.out / "serve.log") as root:
        yield f"{root}/v1"


def _manifest(settings: Settings) -> dict[str, Any]:
    """What the rows mean: a rerun with other values would mix incomparable rows."""
    return {"tasks": settings.tasks, "model": settings.model, "baseline": settings.baseline, "seed": settings.seed,
            "judge": settings.judge, "moa": settings.moa}


def _report(settings: Settings, store: ResultsFile, plan: Plan, info: RunInfo) -> dict[str, Any]:
    prices = load_prices(settings.prices) if settings.prices else None
    scope = Scope([t.id for t in plan.tasks], plan.approaches, plan.baseline, plan.model)
    summary = summarise(store.done(), scope, prices, settings.seed or 0)
    write_summary(settings.out, summary)
    accuracy_label = "win rate vs baseline" if all(t.kind == "judge" for t in plan.tasks) else "accuracy"
    plot_accuracy_cost(summary["approaches"], settings.out / COST_PLOT, accuracy_label)
    scoped = [row for key, row in store.done().items() if key[0] in set(scope.task_ids)]
    plot_quality_diversity(scoped, summary["quality_diversity_fit"], settings.out / QD_PLOT)
    write_report(settings.out, summary, info)
    return summary


def _info(settings: Settings, tasks: int, simulator: bool, untraced: list[str], torn: bool) -> RunInfo:
    endpoint = settings.url or f"`selfmoa serve` started in front of {settings.serve_base_url}"
    return RunInfo(settings.command, endpoint, settings.model, f"{settings.tasks} ({tasks} tasks)",
                   settings.approaches, settings.baseline, settings.seed,
                   datetime.datetime.now().astimezone().isoformat(timespec="seconds"), simulator, settings.judge,
                   settings.moa, untraced, torn, _shown(settings.prices) if settings.prices else None)


def _execute(settings: Settings) -> int:
    tasks = load_tasks(settings.tasks, settings.limit)
    if settings.judge is None and any(t.kind == "judge" for t in tasks):
        raise TaskError(f"{settings.tasks}: judge-scored tasks need --judge MODEL")
    if settings.prices:
        load_prices(settings.prices)  # a bad price file stops the run before anything is paid for
    settings.out.mkdir(parents=True, exist_ok=True)
    check_manifest(settings.out, _manifest(settings))
    plan = Plan(tasks, settings.approaches, settings.baseline, settings.model, settings.judge)
    store = ResultsFile(settings.out)
    try:
        with _endpoint_url(settings) as url:
            client = make_client(url, os.environ.get("OPENAI_API_KEY") or DUMMY_KEY, settings.timeout)
            with client:
                endpoint = Endpoint(client, settings.model, settings.moa, settings.seed)
                simulator = is_simulator(client, settings.model)
                run(plan, endpoint, store, settings.concurrency, settings.progress)
    finally:
        store.close()
    info = _info(settings, len(tasks), simulator, sorted(endpoint.untraced), store.dropped_torn_line)
    summary = _report(settings, store, plan, info)
    print(console_table(table(summary["approaches"], summary["baseline"])))
    if info.simulator:
        print("\nNOTE: the endpoint is the SIMULATOR (selfmoa sim): these numbers demonstrate the tool, "
              "not model quality.")
    print(f"\nreport: {settings.out / 'report.md'}")
    return _exit_code(summary)


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the working folder when it lies below it."""
    relative = os.path.relpath(path.resolve())
    return relative if not relative.startswith("..") else str(path.resolve())


def _exit_code(summary: dict[str, Any]) -> int:
    answers = sum(line["n"] for line in summary["approaches"])
    errors = sum(line["errors"] for line in summary["approaches"])
    if answers and errors == answers:
        print(f"selfmoa ab: every request failed ({errors} errors; see `error` in results.jsonl)", file=sys.stderr)
        return 1
    if errors:
        print(f"selfmoa ab: {errors} of {answers} requests failed (counted in `errors`)", file=sys.stderr)
    return 0


def run_ab(settings: Settings) -> int:
    """Run, report, and return the exit code; expected failures become a one-line message."""
    try:
        with _sigterm_as_interrupt():
            return _execute(settings)
    except (Interrupted, KeyboardInterrupt) as stop:
        written = stop.written if isinstance(stop, Interrupted) else 0
        print(f"\nselfmoa ab: interrupted; {written} new row(s) kept in {settings.out / 'results.jsonl'}. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    except (TaskError, PriceError, StoreError, ProxyError, openai.OpenAIError) as error:
        print(f"selfmoa ab: {error}", file=sys.stderr)
        return 1
