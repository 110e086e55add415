"""`benchmarks/scale.py` runs end to end (tiny and fast), prints its table and goals and writes its
JSON; no timing is asserted, and whether a goal is met at this scale is the real run's business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
COLUMNS = ["load", "answered", "p50 s proxy / direct", "p99 s proxy / direct", "p99 ratio",
           "requests/s proxy / direct", "proxy peak threads", "proxy RSS KB per in-flight", "proxy CPU ms per request"]
PROXY_FIELDS = {"sent", "answered", "p50_s", "p99_s", "requests_s", "peak_threads", "idle_rss_kb", "peak_rss_kb",
                "rss_kb_per_inflight", "cpu_ms_per_request", "sim_cpu_s", "client_cpu_s"}


def test_the_scale_benchmark_prints_a_row_per_level_and_the_throughput_row(tmp_path: Path) -> None:
    out_json = tmp_path / "scale.json"
    command = [sys.executable, str(SCRIPT), "--levels", "8", "--time-scale", "1", "--throughput-clients", "8",
               "--throughput-seconds", "2", "--no-fail", "--json", str(out_json)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr  # --no-fail: 0 even when a goal is missed

    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| load "))
    assert [cell.strip() for cell in header.strip("|").split("|")] == COLUMNS
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines
            if line.startswith("| ") and line != header]
    assert [row[0].split(",")[0] for row in rows] == ["C=8", "throughput"]
    assert all(len(row) == len(COLUMNS) for row in rows)
    assert rows[0][1] == "8/8"
    assert "SIMULATOR" in done.stdout and "Python " in done.stdout and "UTC" in done.stdout
    goals = [line for line in lines if line.startswith(("PASS ", "FAIL "))]
    assert any("C=8: p99" in line for line in goals) and any("throughput" in line for line in goals)

    report = json.loads(out_json.read_text())
    assert report["simulator"] is True and {"date_utc", "cpus", "arch", "python"} <= set(report["machine"])
    assert [level["clients"] for level in report["levels"]] == [8]
    for result in [*report["levels"], report["throughput"]]:
        assert PROXY_FIELDS <= set(result["proxy"])
        assert result["proxy"]["peak_threads"] >= 1 and result["proxy"]["peak_rss_kb"] > 0
        assert result["proxy"]["answered"] == result["proxy"]["sent"] > 0
        assert result["direct"]["answered"] == result["direct"]["sent"] > 0
        assert result["p99_ratio"] > 0
    assert report["throughput"]["rps_ratio"] > 0 and isinstance(report["throughput"]["workers_supported"], bool)
    assert report["goals"] and all({"ok", "goal"} <= set(goal) for goal in report["goals"])
