"""Resident memory of a process and all its descendants (standard library only).

Why the whole tree: CocoIndex 0.3.39 runs SentenceTransformerEmbed in a subprocess of its
own, so the memory a model costs is not in the engine process's RSS; counting descendants
charges each engine for everything it started (a separate Postgres server is not a child
here: the benchmark runs one for both engines).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(pid: int | None = None) -> float:
    """VmRSS of ``pid`` (default: this process) and its descendants, in MB."""
    return sum(_status_kb(p, "VmRSS") for p in tree_pids(pid or os.getpid())) / 1024


class PeakSampler:
    """Samples tree_rss_mb every ``interval`` seconds in a daemon thread; keeps the max."""

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._paused.is_set():
                self.peak = max(self.peak, tree_rss_mb(self.pid))

    def pause(self, paused: bool) -> None:
        """Stop sampling while idle CPU is measured (reading /proc costs CPU here)."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def __enter__(self) -> PeakSampler:
        self.peak = tree_rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak = max(self.peak, tree_rss_mb(self.pid))


def tree_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of ``pid`` (default: this process) and its descendants.

    Each process's reaped children count too (``cutime``/``cstime``): a child that exits
    during a measurement (an idle split worker) would otherwise take its CPU with it and
    make the difference negative.
    """
    ticks = 0
    for p in tree_pids(pid or os.getpid()):
        try:
            raw = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")
