"""The output folder's durable state: `results.jsonl` (append-only) and `run.json` (what the rows mean).

Resume rests on two rules. Rows are only ever appended, each as one complete line in one
`write(2)` on an O_APPEND descriptor, so rows already written stay byte for byte. A process killed
mid-write (kill -9) can leave a last line without its newline: that torn tail is cut off on the
next start and its task redone; it is never joined to the next row. Any other unreadable line is
someone else's damage and stops the run instead of being "repaired".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"
MANIFEST = "run.json"
Key = tuple[str, str]


class StoreError(RuntimeError):
    """The output folder cannot be resumed as it is; the message says why and what to do."""


def _parse(line: bytes, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError:
        raise StoreError(f"{where}: not a JSON row; move the file away to start over") from None
    if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("approach"), str):
        raise StoreError(f"{where}: a row needs string `id` and `approach`")
    return row


class ResultsFile:
    """`results.jsonl`: the rows written so far (torn tail dropped), and appends of new ones."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RESULTS
        self.dropped_torn_line = False
        self.rows = self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) < len(data):  # a write cut short by a kill: drop it, redo that task
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
            self.dropped_torn_line = True
        lines = complete.splitlines()
        return [_parse(line, f"{self.path} line {n}") for n, line in enumerate(lines, start=1) if line.strip()]

    def done(self) -> dict[Key, dict[str, Any]]:
        """The finished task x approach pairs and their rows (the first row of a pair wins)."""
        finished: dict[Key, dict[str, Any]] = {}
        for row in self.rows:
            finished.setdefault((row["id"], row["approach"]), row)
        return finished

    def append(self, row: dict[str, Any]) -> None:
        """One row, written whole in a single append (flushed to the OS before returning)."""
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (rare, e.g. a full disk): finish the same line
            written += os.write(self._fd, data[written:])
        self.rows.append(row)

    def close(self) -> None:
        os.close(self._fd)


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write `run.json` on the first run; on a rerun, refuse settings that would change what rows mean."""
    path = folder / MANIFEST
    if not path.exists():
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    changed = sorted(key for key in set(previous) | set(manifest) if previous.get(key) != manifest.get(key))
    if changed:
        raise StoreError(f"{folder} holds results of a run with other settings ({', '.join(changed)} differ); "
                         f"rerun with the same settings to resume, or choose another --out")
