"""Task files for `selfmoa ab`: one JSON object a line, validated, or a bundled set named instead.

A task is what the user wants answered and how to score the answer. Validation happens up front
(pydantic), so a typo in line 812 stops the run before any request is paid for, and the error names
the file, the line and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..sim.answers import normalise_number

DATA = Path(__file__).parent / "data"
BUNDLED: tuple[str, ...] = ("arithmetic", "choice", "open")
"""Bundled sets: `arithmetic` and `choice` are the simulator's own questions (it recognises them and
answers with each simulated model's accuracy); `open` is open-ended, scored by a judge."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHOICE_INSTRUCTION = 'Pick one option and finish with a final line of the form "Answer: <letter>".'

Scorer = Literal["numeric", "choice", "exact", "math", "judge"]


class TaskError(ValueError):
    """A task file or set that cannot be used; the message names the file, line and field."""


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str


class Task(BaseModel):
    """One line of a task file. Unknown keys (a category, a source...) are allowed and ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    answer: str | int | float | None = None
    choices: list[str] | None = Field(default=None, min_length=2, max_length=len(LETTERS))
    scorer: Scorer | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _consistent(self) -> Task:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("`messages` must end with a user message")
        if self.answer is None and self.kind != "judge":
            raise ValueError(f"`answer` is required for the {self.kind} scorer")
        if self.kind == "choice":
            self._check_choice()
        return self

    def _check_choice(self) -> None:
        if not self.choices:
            raise ValueError("the choice scorer needs `choices`")
        if self.answer_letter is None:
            raise ValueError(f"`answer` must be a letter A-{LETTERS[len(self.choices) - 1]} or one of the `choices`")

    @property
    def kind(self) -> Scorer:
        """The scorer: as given, else `choice` with options, `numeric` for a number, else `exact`."""
        if self.scorer is not None:
            return self.scorer
        if self.choices:
            return "choice"
        return "numeric" if self.numeric_answer is not None else "exact"

    @property
    def numeric_answer(self) -> str | None:
        if isinstance(self.answer, bool) or self.answer is None:
            return None
        return normalise_number(str(self.answer))

    @property
    def answer_letter(self) -> str | None:
        """A choice task's answer as its option letter (the file may give the letter or the option text)."""
        if not self.choices or self.answer is None:
            return None
        text = str(self.answer).strip()
        letters = LETTERS[: len(self.choices)]
        if len(text) == 1 and text.upper() in letters:
            return text.upper()
        folded = [option.strip().casefold() for option in self.choices]
        return letters[folded.index(text.casefold())] if text.casefold() in folded else None

    def conversation(self) -> list[dict[str, Any]]:
        """The messages to send; a choice task's options are appended, lettered, to the last user turn."""
        turns = [m.model_dump() for m in self.messages] if self.messages else [{"role": "user", "content": self.prompt}]
        if self.choices:
            options = "\n".join(f"{LETTERS[i]}) {text}" for i, text in enumerate(self.choices))
            turns[-1] = {**turns[-1], "content": f"{turns[-1]['content']}\n\n{options}\n\n{CHOICE_INSTRUCTION}"}
        return turns

    def question_text(self) -> str:
        """The whole question as one text (for the judge): the conversation, turns labelled if several."""
        turns = self.conversation()
        if len(turns) == 1:
            return str(turns[0]["content"])
        return "\n\n".join(f"[{t['role']}]\n{t['content']}" for t in turns)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"field `{field}`: {message}" if field else message


def parse_lines(text: str, source: str) -> list[Task]:
    """Every non-blank line of `text` as a Task; the first bad line raises a TaskError naming it."""
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {line_no}"
        try:
            task = Task.model_validate(json.loads(line))
        except json.JSONDecodeError as error:
            raise TaskError(f"{where}: not JSON ({error.msg})") from None
        except ValidationError as error:
            raise TaskError(f"{where}: {_describe(error)}") from None
        if task.id in seen:
            raise TaskError(f"{where}: field `id`: {task.id!r} already used on line {seen[task.id]}")
        seen[task.id] = line_no
        tasks.append(task)
    if not tasks:
        raise TaskError(f"{source}: no tasks")
    return tasks


def load_tasks(source: str, limit: int | None = None) -> list[Task]:
    """The tasks of a JSONL file, or of a bundled set named instead of a path; the first `limit` of them."""
    path = Path(source)
    if path.is_file():
        tasks = parse_lines(path.read_text(encoding="utf-8"), str(path))
    elif source in BUNDLED:
        tasks = parse_lines((DATA / f"{source}.jsonl").read_text(encoding="utf-8"), f"bundled set {source}")
    else:
        raise TaskError(f"{source}: no such file, and not a bundled set ({', '.join(BUNDLED)})")
    return tasks[:limit] if limit is not None else tasks
