"""Servers as process groups, and readings of a process TREE from /proc (Linux): threads, resident
memory and CPU time of a process and all its descendants (a server with `--workers N` is a parent
and N children), and a sampler that keeps their peaks while a load runs.

CPU time is read per live process (utime + stime of /proc/PID/stat): a child's CPU only reaches its
parent's cutime/cstime once it has exited and been reaped, so summing the parent alone would miss it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


class Exited(RuntimeError):
    """The server exited before it was healthy (e.g. an unknown flag); the message is its last line."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def launch(command: list[str], env: dict[str, str], health: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`command` in its own process group (output to `log`) once `health` answers 200; on the way out,
    even on an error or Ctrl-C, the whole group: SIGTERM, then SIGKILL for what is left."""
    with open(log, "wb") as out:
        running = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            if running.poll() is not None:
                lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
                raise Exited(lines[-1][-200:])
            try:
                if httpx.get(health, timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield running
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(running.pid, sig)
            except ProcessLookupError:
                break  # the group is gone
            try:
                running.wait(10)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(0.2)  # then SIGKILL whatever of the group (workers) outlived its leader


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, `state`, is index 0)."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone meanwhile


def tree(root: int) -> list[int]:
    """`root` and every live descendant, found by scanning the parents of all processes."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class TreeReading:
    threads: int  # summed over the tree
    rss_kb: int  # summed over the tree
    cpu_s: dict[int, float]  # utime + stime of each live process


def read_tree(root: int) -> TreeReading:
    threads = rss = 0
    cpu: dict[int, float] = {}
    for pid in tree(root):
        fields = _stat_fields(pid)
        try:
            status = (PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        if fields is None:
            continue
        for line in status.splitlines():
            if line.startswith("Threads:"):
                threads += int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss += int(line.split()[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    return TreeReading(threads, rss, cpu)


@dataclass
class Sampler:
    """Reads the tree of `root` every `every` seconds in a thread, between `with` and its end."""

    root: int
    every: float = 0.1
    peak_threads: int = 0
    peak_rss_kb: int = 0
    samples: int = 0
    _start_cpu: dict[int, float] = field(default_factory=dict)
    _last_cpu: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._start_cpu = read_tree(self.root).cpu_s
        self._thread = threading.Thread(target=self._run, name="procstat-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        reading = read_tree(self.root)
        self.samples += 1
        self.peak_threads = max(self.peak_threads, reading.threads)
        self.peak_rss_kb = max(self.peak_rss_kb, reading.rss_kb)
        self._last_cpu.update(reading.cpu_s)  # a process that exits keeps its last reading

    @property
    def cpu_s(self) -> float:
        """CPU time the tree spent since `with` began (processes born meanwhile count from zero)."""
        return sum(last - self._start_cpu.get(pid, 0.0) for pid, last in self._last_cpu.items())
