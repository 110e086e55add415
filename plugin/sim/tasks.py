"""The bundled task sets: simple questions with known answers, so simulated quality is measurable.

Each task keeps its bare question (`stem`) apart from the full prompt (`question`): a simulated
model recognises a task when the stem appears in the conversation, so a client may wrap it in its
own instructions and still get task-aware behaviour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

TASKS_DIR = Path(__file__).parent / "data" / "tasks"
TASK_SETS: tuple[str, ...] = ("arithmetic", "choice")
LETTERS = "ABCDEFGHIJ"

NUMERIC_INSTRUCTION = 'Show brief working, then finish with a final line of the form "Answer: <number>".'
CHOICE_INSTRUCTION = 'Pick one option and finish with a final line of the form "Answer: <letter>".'


@dataclass(frozen=True)
class Task:
    """One question with its reference answer."""

    id: str
    question: str
    """The full prompt to send as the user message (options and answer-format instruction included)."""
    answer: str
    """The reference answer: a normalised number, or an option letter."""
    kind: Literal["numeric", "choice"]
    task_set: str = ""
    stem: str = ""
    """The bare question; its presence in a prompt is how the simulator recognises the task."""
    options: tuple[str, ...] = field(default=())
    """Option letters of a choice task ("A", "B", ...)."""


def _choice_prompt(stem: str, options: list[str]) -> str:
    lines = [f"{LETTERS[i]}) {text}" for i, text in enumerate(options)]
    return f"{stem}\n\n" + "\n".join(lines) + f"\n\n{CHOICE_INSTRUCTION}"


def _parse(task_set: str, line_no: int, record: dict[str, Any]) -> Task:
    """One JSONL record as a Task; a choice task's answer must be one of its option letters."""
    stem, answer = str(record["question"]).strip(), str(record["answer"]).strip()
    if "options" in record:
        options = [str(text) for text in record["options"]]
        letters = tuple(LETTERS[: len(options)])
        if answer not in letters:
            raise ValueError(f"{task_set}.jsonl line {line_no}: answer {answer!r} is not one of {letters}")
        return Task(record["id"], _choice_prompt(stem, options), answer, "choice", task_set, stem, letters)
    return Task(record["id"], f"{stem}\n\n{NUMERIC_INSTRUCTION}", answer, "numeric", task_set, stem)


@cache
def _load(name: str) -> tuple[Task, ...]:
    if name not in TASK_SETS:
        raise ValueError(f"unknown task set {name!r}; bundled sets: {', '.join(TASK_SETS)}")
    path = TASKS_DIR / f"{name}.jsonl"
    tasks = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            tasks.append(_parse(name, line_no, json.loads(line)))
    return tuple(tasks)


def load_tasks(name: str) -> list[Task]:
    """The tasks of one bundled set (see TASK_SETS), in file order."""
    return list(_load(name))


@lru_cache(maxsize=1)
def _all_tasks_longest_first() -> tuple[Task, ...]:
    tasks = [task for name in TASK_SETS for task in _load(name)]
    return tuple(sorted(tasks, key=lambda task: len(task.stem), reverse=True))


def find_task(text: str) -> Task | None:
    """The bundled task whose bare question appears in `text` (the longest one if several do)."""
    for task in _all_tasks_longest_first():
        if task.stem in text:
            return task
    return None
