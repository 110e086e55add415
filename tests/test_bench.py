"""`benchmarks/run.py` runs end to end (tiny and fast) and prints its table; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.run import APPROACHES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def test_bench_prints_a_ratio_table_with_a_row_per_approach_and_mode(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--requests", "2", "--concurrency", "2", "--time-scale", "0.1",
                           "--json", str(out_json)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| approach "))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    ratio = next(i for i, name in enumerate(columns) if "ratio" in name)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines
            if line.startswith("| ") and line != header]
    for mode in ("sequential", "concurrency 2"):
        mine = {row[0]: row for row in rows if row[1] == mode}
        assert sorted(mine) == sorted(a.name for a in APPROACHES), mode
        assert mine["single"][ratio] == "1.00x"
        assert all(row[ratio].endswith("x") for row in mine.values())
    assert "SIMULATOR" in done.stdout

    report = json.loads(out_json.read_text())
    assert report["simulator"] is True
    assert len(report["rows"]) == 2 * len(APPROACHES)


def test_the_serving_benchmark_prints_its_three_ratios(tmp_path: Path) -> None:
    """Tiny and fast: whether a goal is met at this scale is the real run's business, not this test's."""
    script = SCRIPT.parent / "serving.py"
    out_json = tmp_path / "serving.json"
    done = subprocess.run([sys.executable, str(script), "--rounds", "2", "--clients", "4", "--per-client", "1",
                           "--time-scale", "0.2", "--json", str(out_json)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: a goal missed, said on stderr
    assert ("goal was missed" in done.stderr) == (done.returncode == 1)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 4 and "SIMULATOR" in done.stdout  # the header and three measures
    report = json.loads(out_json.read_text())
    assert report["streaming"]["ratio"] > 0 and report["throughput"]["ratio"] > 0
    assert report["cpu"]["cpu_ms_self_moa"] > 0


def test_the_placement_benchmark_prints_both_placements_prompt_work(tmp_path: Path) -> None:
    """Tiny: one short conversation per placement on a real llama.cpp server; the table and the
    JSON carry llama.cpp's own counts."""
    script = SCRIPT.parent / "placement.py"
    out_json = tmp_path / "placement.json"
    done = subprocess.run([sys.executable, str(script), "--trials", "1", "--conversation-tokens", "200",
                           "--samples", "2", "--json", str(out_json)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: the goal missed, said on stderr
    assert ("goal was missed" in done.stderr) == (done.returncode == 1)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`system`", "`last_user`"]
    assert "REAL llama.cpp" in done.stdout and "Goal (last_user)" in done.stdout
    report = json.loads(out_json.read_text())
    for placement in ("system", "last_user"):
        (trial,) = report[placement]
        assert trial["prompt_n"] > 0 and trial["cache_n"] >= 0 and trial["added_tokens"] > 0
    assert report["last_user"][0]["cache_n"] >= report["last_user"][0]["conversation_tokens"]


def test_the_soak_runs_briefly_and_plots_memory_and_threads(tmp_path: Path) -> None:
    """A few seconds of `make reliability`'s soak: every request lands in a column, the proxy is
    sampled, the plot is written. Whether the goals are met at this scale is the real run's business."""
    import httpx

    from benchmarks.soak import MODELS, plot, soak
    from selfmoa.sim import BackgroundSim
    from selfmoa.testing.live import Proxy

    with BackgroundSim(seed=1, time_scale=1.0) as sim:
        httpx.post(f"{sim.root_url}/sim/profile", json={"models": MODELS}, timeout=30).raise_for_status()
        proxy = Proxy.configured(sim.base_url, "defaults: {timeout: 20}\n", tmp_path)
        try:
            result = soak(proxy, sim.root_url, seconds=3, rate=4, question=lambda i: f"Soak probe {i}: 2 + {i}?")
        finally:
            proxy.close()
    tally = result.tally
    assert result.sent == tally.requests == 12
    assert tally.succeeded + tally.clear + tally.hung + tally.wrong == 12
    assert result.readings and all(r.rss_mb > 0 and r.threads >= 1 for r in result.readings)
    plot(result, tmp_path / "soak.png")
    assert (tmp_path / "soak.png").stat().st_size > 0
