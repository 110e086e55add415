"""`selfmoa ab` task files: validation errors name file, line and field; bundled sets load; choices render."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfmoa.ab.tasks import BUNDLED, CHOICE_INSTRUCTION, TaskError, load_tasks
from selfmoa.sim.tasks import find_task


def write(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(("bad", "needle"), [
    ('{"id": "b", "answer": 1}', "prompt"),                                       # neither prompt nor messages
    ('{"id": "b", "prompt": "x", "messages": [{"role": "user", "content": "x"}], "answer": 1}', "exactly one"),
    ('{"id": "b", "prompt": "x"}', "`answer` is required"),
    ('{"id": "b", "prompt": "x", "answer": 1, "scorer": "fuzzy"}', "field `scorer`"),
    ('{"id": "b", "prompt": "x", "answer": "E", "choices": ["p", "q"]}', "letter A-B"),
    ('{"id": "b", "messages": [{"role": "robot", "content": "x"}], "answer": 1}', "field `messages.0.role`"),
    ('{"id": "b", "prompt": 5, "answer": 1}', "field `prompt`"),
    ('{"id": "a", "prompt": "x", "answer": 1}', "already used on line 1"),
    ('{"id": "b", "prompt": "x", "answer": 1', "not JSON"),
])
def test_a_bad_line_is_an_error_naming_file_line_and_field(tmp_path: Path, bad: str, needle: str) -> None:
    path = write(tmp_path, '{"id": "a", "prompt": "x", "answer": 1}', "", bad)
    with pytest.raises(TaskError) as caught:
        load_tasks(path)
    assert f"{path} line 3" in str(caught.value) and needle in str(caught.value)


def test_messages_tasks_and_unknown_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '{"id": 7, "messages": [{"role": "system", "content": "Be terse."}, '
                           '{"role": "user", "content": "2+2?"}], "answer": 4, "category": "sums"}')
    [task] = load_tasks(path)
    assert task.id == "7" and task.kind == "numeric"
    assert [m["role"] for m in task.conversation()] == ["system", "user"]


def test_a_choice_task_renders_its_options_lettered() -> None:
    task = load_tasks("choice")[0]
    content = task.conversation()[-1]["content"]
    assert "A) Berlin\nB) Madrid\nC) Paris\nD) Rome" in content and content.endswith(CHOICE_INSTRUCTION)
    assert task.kind == "choice" and task.answer_letter == "C"


def test_bundled_sets_load_and_limit_applies() -> None:
    for name in BUNDLED:
        assert len(load_tasks(name)) >= 8
    assert [t.id for t in load_tasks("arithmetic", limit=2)] == ["arith-01", "arith-02"]
    assert {t.kind for t in load_tasks("open")} == {"judge"}
    with pytest.raises(TaskError, match="not a bundled set"):
        load_tasks("no-such-set")


def test_the_simulator_recognises_the_bundled_arithmetic_and_choice_tasks() -> None:
    for name in ("arithmetic", "choice"):
        for task in load_tasks(name):
            known = find_task(task.conversation()[-1]["content"])
            assert known is not None and known.id == task.id
            assert known.answer == (task.answer_letter if task.choices else task.numeric_answer)
