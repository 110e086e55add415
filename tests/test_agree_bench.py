"""`benchmarks/agree.py` runs end to end on a few tasks and prints its trade-off table; no timing is asserted.

It starts its own simulators, llama.cpp with SmolLM2, `selfmoa serve` in front of each, and drives the
real `selfmoa ab` command line, so this proves the whole chain works; whether the goals are met at this
scale is the real run's business (`make bench`), so exit code 1 is accepted when stderr says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "agree.py"
COLUMNS = ["backend", "model", "consistency", "fixed `self_moa` right", "`self_moa@agree` right", "McNemar p",
           "tokens", "p50 latency", "calls per task", "early exits"]
TASKS, REAL_TASKS = 4, 2


@pytest.mark.timeout(600)
def test_the_agreement_benchmark_prints_the_trade_off(tmp_path: Path) -> None:
    out_json = tmp_path / "agree.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--seeds", "1", "--limit", str(TASKS),
                           "--llamacpp-tasks", str(REAL_TASKS), "--json", str(out_json)],
                          check=False, capture_output=True, text=True, timeout=580)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert ("goal was missed" in done.stderr) == (done.returncode == 1), done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| backend |"))
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start:start + 6]]
    assert table[0] == COLUMNS
    rows = table[2:]
    assert [row[:3] for row in rows] == [["sim", "sim-strong", "0.8"], ["sim", "sim-weak", "0.8"],
                                         ["sim", "sim-strong", "0"], ["llama.cpp", "SmolLM2-135M", "n/a"]]
    for row in rows:
        n = REAL_TASKS if row[0] == "llama.cpp" else TASKS
        assert row[3].endswith(f"/{n}") and row[4].endswith(f"/{n}") and row[9].endswith(f"/{n}"), row
        assert row[6].endswith("x") and " vs " in row[8], row
    assert any(line.startswith("Goal (sim-strong, consistency 0.8): ") for line in lines)
    assert any(line.startswith("Worst case (independent samples") for line in lines)

    report = json.loads(out_json.read_text())
    assert report["goal_met"] == (done.returncode == 0)
    strong = report["rows"][0]
    # fixed self_moa makes 2 calls per task (n=6, then the aggregation); the early arm 1 when it exits
    assert strong["fixed"]["calls"] == [2] * TASKS
    assert all(calls in (1, 3) for calls in strong["early"]["calls"])
    assert strong["early"]["exits"] == strong["early"]["calls"].count(1)
