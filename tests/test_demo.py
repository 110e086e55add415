"""`selfmoa demo`: an offline A/B run of six approaches that prints the table, writes report and plots,
and says it is a simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from selfmoa.demo import DEMO_APPROACHES

SELFMOA = Path(sys.executable).parent / "selfmoa"


def test_demo_prints_the_ab_table_writes_the_report_and_flags_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.jsonl").write_text('{"id": "stale", "approach": "none"}\n')  # an earlier demo's rows
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([str(SELFMOA), "demo", "--limit", "3", "--out", str(out)], check=False,
                          capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("approach "))
    assert [line.split()[0] for line in lines[header + 2: header + 2 + len(DEMO_APPROACHES)]] == DEMO_APPROACHES
    assert lines[header + 2].startswith("none (baseline)  3 ")
    assert "SIMULATOR" in done.stdout and "say nothing about real models" in done.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert [(line["approach"], line["n"], line["errors"]) for line in summary["approaches"]] == [
        (name, 3, 0) for name in DEMO_APPROACHES]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * len(DEMO_APPROACHES) and all(row["id"] != "stale" for row in rows)
    assert "come from `selfmoa sim`" in (out / "report.md").read_text()
    for plot in ("accuracy_vs_cost.png", "quality_diversity.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
