"""`selfmoa demo`: the offline end-to-end demo runs, answers with every approach and says it is a simulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from selfmoa.demo import APPROACHES
from selfmoa.sim import load_tasks

SELFMOA = Path(sys.executable).parent / "selfmoa"


def test_demo_answers_with_every_approach_and_flags_the_simulator() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([str(SELFMOA), "demo", "--tasks", "1"], check=False, capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout

    header = next(line for line in out.splitlines() if line.startswith("task "))
    assert header.split() == ["task", "expected", *(a.name for a in APPROACHES)]
    task = load_tasks("arithmetic")[0]
    row = next(line for line in out.splitlines() if line.startswith(task.id + " "))
    assert re.fullmatch(rf"{task.id}\s+{task.answer}" + r"(\s+\S+ [✓✗])" * len(APPROACHES), row), row

    for approach in APPROACHES:  # one summary line each: correct/total, latency, tokens, calls
        assert re.search(rf"^{approach.name}\s+[01]/1\s+\d+\.\d+ s\s+\d+\s+\d+\.\d$", out, re.MULTILINE), approach.name
    assert "SIMULATOR" in out and "say nothing about real models" in out
    assert "FAILED" not in done.stderr
