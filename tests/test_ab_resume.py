"""Resume: a run killed with SIGKILL, rerun with the same command, skips what finished, never duplicates a
row, keeps the rows already written byte for byte, and drops a torn last line instead of merging it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from selfmoa.ab.store import ResultsFile, StoreError, check_manifest
from selfmoa.testing.live import BIN
from tests.ab_backend import ScriptedEndpoint, completion, number_in, say_tasks

TASKS = 16


def slow(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    time.sleep(0.1)
    return 200, completion(f"Answer: {number_in(body)}")


def command(tasks: Path, out: Path, url: str) -> list[str]:
    return [str(BIN / "selfmoa"), "ab", "--tasks", str(tasks), "--approaches", "none,moa", "--model", "m",
            "--out", str(out), "--url", url, "--concurrency", "2", "--no-progress"]


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for_rows(path: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run did not write {count} rows (exit code {process.poll()})")


def test_a_run_killed_with_sigkill_resumes_without_duplicates(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out"
    tasks.write_text(say_tasks(TASKS))
    results = out / "results.jsonl"
    with ScriptedEndpoint(slow) as endpoint:
        first = subprocess.Popen(command(tasks, out, endpoint.url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_rows(results, 6, first)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL
        kept = results.read_bytes()
        finished = {(r["id"], r["approach"]) for r in rows_of(results)}
        assert 6 <= len(finished) < 2 * TASKS
        with open(results, "ab") as torn:  # what a kill in the middle of a write leaves behind
            torn.write(b'{"id": "t15", "approach": "moa", "output": "Answ')
        asked_before = len(endpoint.bodies)

        second = subprocess.run(command(tasks, out, endpoint.url), capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        asked_again = [(f"t{number_in(b)}", "none" if b["model"] == "m" else "moa")
                       for b in endpoint.bodies[asked_before:]]

    data = results.read_bytes()
    assert data.startswith(kept) and b"Answ\n" not in data and b"Answ{" not in data
    keys = [(r["id"], r["approach"]) for r in rows_of(results)]
    assert len(keys) == len(set(keys)) == 2 * TASKS
    assert not finished & set(asked_again), "a finished task was asked again"
    assert len(asked_again) == 2 * TASKS - len(finished)
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["n"] for entry in summary["approaches"]] == [TASKS, TASKS]
    assert "torn last line" in (out / "report.md").read_text()


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path: Path) -> None:
    tasks, out = tmp_path / "tasks.jsonl", tmp_path / "out"
    tasks.write_text(say_tasks(TASKS))
    with ScriptedEndpoint(slow) as endpoint:
        process = subprocess.Popen(command(tasks, out, endpoint.url), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        wait_for_rows(out / "results.jsonl", 4, process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in err and "Run the same command again to resume" in err
    rows = rows_of(out / "results.jsonl")
    assert len({(r["id"], r["approach"]) for r in rows}) == len(rows) >= 4


def test_a_torn_tail_is_cut_but_damage_elsewhere_stops_the_run(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    whole = b'{"id": "a", "approach": "none", "score": 1}\n'
    path.write_bytes(whole + b'{"id": "b", "appr')
    store = ResultsFile(tmp_path)
    store.append({"id": "b", "approach": "none", "score": 0})
    store.close()
    assert path.read_bytes() == whole + b'{"id": "b", "approach": "none", "score": 0}\n'
    assert store.dropped_torn_line

    path.write_bytes(b"not json\n" + whole)
    with pytest.raises(StoreError, match="line 1"):
        ResultsFile(tmp_path)


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    check_manifest(tmp_path, {"model": "m", "seed": 1})
    check_manifest(tmp_path, {"model": "m", "seed": 1})
    with pytest.raises(StoreError, match="seed differ"):
        check_manifest(tmp_path, {"model": "m", "seed": 2})
    assert os.path.exists(tmp_path / "run.json")
