"""`benchmarks/quality.py` runs end to end on three tasks and prints its tables; no timing is asserted.

It starts its own SmolLM2 server and `selfmoa serve` and drives the real `selfmoa ab` command line,
so this proves the whole chain works; whether the goal (no leaks) is met at this scale is the real
run's business (`make bench`), so exit code 1 is accepted when stderr says the goal was missed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
ACCURACY_COLUMNS = ["arm", "accuracy (95% CI)", "p vs plain (McNemar, Holm)", "quality (mean proposal score)",
                    "leaking answers", "errors"]
PAIR_COLUMNS = ["placements A vs B", "both right", "only A right", "only B right", "both wrong", "exact McNemar p"]
TASKS = 3


def table(lines: list[str], first_column: str) -> tuple[list[str], list[list[str]]]:
    """The markdown table whose header starts with `first_column`: its columns and its rows."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip("|").split("|")])
    return block[0], block[2:]


@pytest.mark.timeout(900)
def test_the_quality_benchmark_prints_accuracy_and_leaks_per_placement(tmp_path: Path) -> None:
    out_json = tmp_path / "quality.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--limit", str(TASKS), "--samples", "2",
                           "--out", str(tmp_path / "run"), "--json", str(out_json)],
                          check=False, capture_output=True, text=True, timeout=880)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert ("goal was missed" in done.stderr) == (done.returncode == 1), done.stderr
    lines = done.stdout.splitlines()
    assert "REAL model" in done.stdout and "caveat" in done.stdout
    assert any(line.startswith("Goal: leaks: 0 for every placement -- ") for line in lines)

    columns, rows = table(lines, "arm")
    assert columns == ACCURACY_COLUMNS
    names = [row[0] for row in rows]
    assert names[:3] == ["plain model (`none`)", "`self_moa`, placement `system`", "`self_moa`, placement `last_user`"]
    assert names[3:] in ([], ["`self_moa`, placement `auto`"])
    for row in rows:
        assert row[1].split(" ")[0] in {f"{k}/{TASKS}" for k in range(TASKS + 1)}, row
        assert row[4].endswith(f"/{TASKS}") and row[5].isdigit(), row

    columns, pairs = table(lines, "placements A vs B")
    assert columns == PAIR_COLUMNS
    placements = len(rows) - 1
    assert len(pairs) == placements * (placements - 1) // 2
    for pair in pairs:
        assert sum(int(count) for count in pair[1:5]) == TASKS and 0.0 <= float(pair[5]) <= 1.0

    report = json.loads(out_json.read_text())
    assert [arm["name"] for arm in report["arms"]] == ["none", "system", "last_user", "auto"][:len(rows)]
    assert all(len(arm["scores"]) == TASKS for arm in report["arms"])
    assert (tmp_path / "run" / "ab" / "results.jsonl").is_file() and report["exit_code"] == 0
