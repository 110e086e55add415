"""`selfmoa ab` as a user types it: usage errors, the missing extra, --serve, a bundled set through a real proxy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfmoa.ab.command import INSTALL_HINT
from selfmoa.ab.report import SIMULATOR_NOTE
from selfmoa.ab.tasks import load_tasks
from selfmoa.cli import main
from selfmoa.sim import BackgroundSim, extract_answer
from selfmoa.testing.live import BIN, Proxy

BASE = ["ab", "--tasks", "arithmetic", "--approaches", "none,self_moa", "--model", "sim-strong", "--out", "o"]


@pytest.mark.parametrize(("extra", "flag"), [
    (["--url", "http://x/v1", "--serve", "--base-url", "http://y/v1"], "--url"),
    (["--serve"], "--base-url"),
    (["--url", "http://x/v1", "--base-url", "http://y/v1"], "--base-url"),
    ([], "--url"),
    (["--url", "http://x/v1", "--baseline", "moa"], "--baseline"),
    (["--url", "http://x/v1", "--moa", "self_moa={not json"], "--moa"),
    (["--url", "http://x/v1", "--moa", "mixed_moa={}"], "--moa"),
    (["--url", "http://x/v1", "--moa", 'self_moa=["a"]'], "--moa"),
    (["--url", "http://x/v1", "--concurrency", "0"], "--concurrency"),
])
def test_bad_combinations_are_usage_errors_naming_the_flag(extra: list[str], flag: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*BASE, *extra])
    assert result.exit_code == 2 and flag in result.output, result.output


def test_without_the_extra_it_names_the_install() -> None:
    code = ("import sys; sys.modules['scipy'] = None; from selfmoa.cli import main; "
            "main(['ab', '--tasks', 'arithmetic', '--approaches', 'none', '--model', 'm', '--out', 'o', "
            "'--url', 'http://127.0.0.1:9/v1'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert INSTALL_HINT in done.stderr and "scipy" in done.stderr and "Traceback" not in done.stderr


def check_scores(rows: list[dict[str, object]], task_set: str) -> None:
    """Each row's score, recomputed from its output with the simulator's own answer parser."""
    answers = {t.id: (t.answer_letter or t.numeric_answer) for t in load_tasks(task_set)}
    for row in rows:
        assert row["error"] is None, row
        assert row["score"] == float(extract_answer(str(row["output"])) == answers[str(row["id"])]), row


def serve_processes(base_url: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if " serve " in text and base_url in text:
            found.append(text)
    return found


def test_serve_mode_starts_and_stops_its_own_proxy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with BackgroundSim() as sim:  # its own: no other test's `selfmoa serve` points at it
        done = subprocess.run([str(BIN / "selfmoa"), "ab", "--tasks", "arithmetic", "--limit", "4",
                               "--approaches", "none,moa,self_moa", "--model", "sim-strong", "--out", str(out),
                               "--serve", "--base-url", sim.base_url, "--no-progress"],
                              capture_output=True, text=True, timeout=180)
        stopped = serve_processes(sim.base_url) == []
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    check_scores(rows, "arithmetic")
    assert (out / "serve.log").exists()
    report = (out / "report.md").read_text()
    assert SIMULATOR_NOTE in report and f"`selfmoa serve` started in front of {sim.base_url}" in report
    assert stopped
    assert "none (baseline)" in done.stdout and "SIMULATOR" in done.stdout


def test_a_bundled_set_end_to_end_through_selfmoa_serve(proxy: Proxy, tmp_path: Path) -> None:
    out = tmp_path / "out"
    moa = '{"proposers": ["sim-strong", "sim-medium", "sim-weak"]}'
    done = subprocess.run([str(BIN / "selfmoa"), "ab", "--tasks", "choice", "--limit", "8",
                           "--approaches", "none,self_moa,mixed_moa,self_moa_seq", "--model", "sim-strong",
                           "--out", str(out), "--url", f"{proxy.url}/v1", "--moa", f"mixed_moa={moa}", "--seed", "3"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 32
    check_scores(rows, "choice")
    summary = json.loads((out / "summary.json").read_text())
    assert [line["approach"] for line in summary["approaches"]] == ["none", "self_moa", "mixed_moa", "self_moa_seq"]
    for line in summary["approaches"]:
        mine = [r for r in rows if r["approach"] == line["approach"]]
        assert line["n"] == 8 and line["correct"] == sum(r["score"] for r in mine)
        assert line["ci_low"] <= line["accuracy"] <= line["ci_high"]
    csv_lines = (out / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("approach,n,correct,accuracy,ci_low,ci_high") and len(csv_lines) == 5
    for plot in ("accuracy_vs_cost.png", "quality_diversity.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
    assert "%" in done.stderr and "answer/s" in done.stderr  # the progress bar, on stderr
