"""Running every task x approach: bounded concurrency, rows written as they finish, resumable.

K daemon worker threads make the HTTP calls; the main thread alone scores, judges' bookkeeping
and writes rows, so rows never interleave and Ctrl-C (a KeyboardInterrupt in the main thread) stops
the run between two rows: nothing half-written, the workers die with the process.

Judge-scored tasks need the baseline's answer before a candidate can be judged against it: the
baseline's requests are queued first, and a candidate answer that arrives earlier waits for it.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
from tqdm import tqdm

from .endpoint import Answer, Endpoint
from .judge import Judgement, judge_prompt, parse_verdict
from .rows import answer_row, base_row, judged_row, unjudged_row
from .store import Key, ResultsFile
from .tasks import Task

Job = Callable[[], Any]
Done = Callable[[Any], None]


@dataclass(frozen=True)
class Plan:
    """What to run: tasks, approaches (the baseline among them), and the judge for `judge` tasks."""

    tasks: list[Task]
    approaches: list[str]
    baseline: str
    model: str
    judge: str | None = None


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped the run; `written` rows of this run are safely on disk."""

    def __init__(self, written: int) -> None:
        super().__init__(f"interrupted after {written} new row(s)")
        self.written = written


class _Workers:
    """K daemon threads running jobs; each finished job's callback comes back through one queue."""

    def __init__(self, count: int) -> None:
        self.jobs: queue.Queue[tuple[Job, Done] | None] = queue.Queue()
        self.finished: queue.Queue[tuple[Done, Any]] = queue.Queue()
        self.pending = 0
        self.count = count
        for index in range(count):
            threading.Thread(target=self._work, name=f"selfmoa-ab-{index}", daemon=True).start()

    def _work(self) -> None:
        while (item := self.jobs.get()) is not None:
            job, done = item
            self.finished.put((done, job()))

    def close(self) -> None:
        """Queued jobs are dropped; each thread ends after its current job."""
        while not self.jobs.empty():
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        for _ in range(self.count):
            self.jobs.put(None)

    def submit(self, job: Job, done: Done) -> None:
        self.pending += 1
        self.jobs.put((job, done))

    def next(self) -> None:
        """Wait for one job and run its callback here (timeouts keep Ctrl-C responsive)."""
        while True:
            try:
                done, result = self.finished.get(timeout=0.2)
                break
            except queue.Empty:
                continue
        self.pending -= 1
        done(result)


@dataclass
class _Run:
    plan: Plan
    endpoint: Endpoint
    store: ResultsFile
    workers: _Workers
    bar: tqdm[Any]
    done: dict[Key, dict[str, Any]]
    waiting: dict[str, list[tuple[Task, str, Answer]]] = field(default_factory=lambda: defaultdict(list))
    written: int = 0

    def write(self, row: dict[str, Any]) -> None:
        self.store.append(row)
        self.done[(row["id"], row["approach"])] = row
        self.written += 1
        self.bar.update(1)

    def ask(self, task: Task, approach: str) -> None:
        self.workers.submit(lambda: self.endpoint.ask(approach, task.conversation()),
                            lambda answer: self.answered(task, approach, answer))

    def answered(self, task: Task, approach: str, answer: Answer) -> None:
        if task.kind != "judge" or approach == self.plan.baseline or answer.error is not None:
            self.write(answer_row(task, approach, self.plan.model, answer))
            if approach == self.plan.baseline:
                for parked in self.waiting.pop(task.id, []):
                    self.judge(*parked)
        elif (task.id, self.plan.baseline) in self.done:
            self.judge(task, approach, answer)
        else:
            self.waiting[task.id].append((task, approach, answer))

    def judge(self, task: Task, approach: str, answer: Answer) -> None:
        row = base_row(task, approach, self.plan.model, answer)
        baseline = self.done[(task.id, self.plan.baseline)]
        if baseline["error"] is not None:
            self.write(unjudged_row(row, score_=1.0, note="the baseline failed on this task: a win without judging"))
            return
        reference = str(baseline["output"])
        self.workers.submit(lambda: self._verdicts(task, answer.output or "", reference),
                            lambda result: self.write(self._judged(row, result)))

    @staticmethod
    def _judged(row: dict[str, Any], result: Judgement | str) -> dict[str, Any]:
        if isinstance(result, Judgement):
            return judged_row(row, result)
        return unjudged_row(row, score_=None, note="judge failed", error=f"judge: {result}")

    def _verdicts(self, task: Task, candidate: str, reference: str) -> Judgement | str:
        """Both readings (candidate as A, then as B); an error is returned as its message."""
        assert self.plan.judge is not None
        question = task.question_text()
        try:
            first = self.endpoint.complete(self.plan.judge, judge_prompt(question, candidate, reference))
            second = self.endpoint.complete(self.plan.judge, judge_prompt(question, reference, candidate))
        except openai.OpenAIError as error:
            return str(error)[:300]
        return Judgement(parse_verdict(first), parse_verdict(second))


def _order(plan: Plan, done: dict[Key, dict[str, Any]]) -> list[tuple[Task, str]]:
    """The pairs still to run: the baseline's first (judging waits for them), then task by task."""
    first = [plan.baseline] + [a for a in plan.approaches if a != plan.baseline]
    pairs = [(task, plan.baseline) for task in plan.tasks]
    pairs += [(task, approach) for task in plan.tasks for approach in first[1:]]
    return [(task, approach) for task, approach in pairs if (task.id, approach) not in done]


def run(plan: Plan, endpoint: Endpoint, store: ResultsFile, concurrency: int, progress: bool = True) -> int:
    """Run every unfinished pair; returns how many rows this run wrote. Raises Interrupted on Ctrl-C."""
    done = store.done()
    todo = _order(plan, done)
    total = len(plan.tasks) * len(plan.approaches)
    with tqdm(total=total, initial=total - len(todo), unit="answer", file=sys.stderr, disable=not progress,
              dynamic_ncols=True, desc="selfmoa ab") as bar:
        state = _Run(plan, endpoint, store, _Workers(concurrency), bar, dict(done))
        try:
            for task, approach in todo:
                state.ask(task, approach)
            while state.workers.pending:
                state.workers.next()
        except KeyboardInterrupt:
            raise Interrupted(state.written) from None
        finally:
            state.workers.close()
    return state.written
