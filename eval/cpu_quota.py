"""A slower CPU on demand: a CPU quota through the cgroup v1 ``cpu`` controller.

``CpuQuota(fraction)`` makes a cgroup whose members together get ``fraction`` of
one core, with a short period (1 ms, or the shortest that keeps the quota at the
kernel's 1 ms minimum) so that throttling stays fine-grained. Threads are moved
into it one by one (a stage's worker thread: threads it starts later inherit the
group). On exit everything is moved back and the group is
removed. Needs root and cgroup v1 (``/sys/fs/cgroup/cpu``); the error says so.
"""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/cpu")
MIN_QUOTA_US = 1000


class CpuQuota:
    def __init__(self, fraction: float, name: str = "cascade"):
        if not 0 < fraction <= 64:
            raise ValueError(f"CPU fraction {fraction} out of range (0, 64]")
        self.fraction = fraction
        self.path = ROOT / f"{name}-{os.getpid()}"
        self.period_us = max(1000, math.ceil(MIN_QUOTA_US / fraction))
        self.quota_us = max(MIN_QUOTA_US, round(fraction * self.period_us))

    def __enter__(self) -> "CpuQuota":
        if not (ROOT / "cpu.cfs_quota_us").exists():
            raise RuntimeError(f"no cgroup v1 cpu controller at {ROOT}: the slower CPU is "
                               "emulated with it (needs root and cgroup v1)")
        _sweep_stale()
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        return self

    def add_thread(self, tid: int) -> None:
        (self.path / "tasks").write_text(str(tid))

    def throttled_s(self) -> float:
        """Time the group's members spent throttled, in seconds."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0

    def __exit__(self, *exc) -> None:
        if not self.path.exists():
            return
        for tid in (self.path / "tasks").read_text().split():
            try:
                (ROOT / "tasks").write_text(tid)
            except OSError:  # the thread has ended
                pass
        self.path.rmdir()


def _sweep_stale() -> None:
    """Remove the empty groups left by a process of ours that was killed."""
    for group in ROOT.glob("cascade-*-*"):
        pid = group.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                group.rmdir()
            except OSError:  # still has threads in it
                pass


class SlowCpu:
    """Emulate a CPU whose every core is ``fraction`` as fast: each thread of this
    process gets a cgroup of its own with a quota of ``fraction`` of one core. (One
    quota shared by the process would let a lone thread run at full speed on a
    multi-core budget, or starve two busy threads.) Threads started later are found
    within ``scan_s`` by a watcher and given theirs; a new thread runs in its
    creator's group until then."""

    def __init__(self, fraction: float, scan_s: float = 0.05):
        self.fraction, self.scan_s = fraction, scan_s
        self._groups: dict[int, CpuQuota] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "SlowCpu":
        self._assign()
        self._watcher = threading.Thread(target=self._watch, name="slow-cpu", daemon=True)
        self._watcher.start()
        return self

    def _assign(self) -> None:
        for name in os.listdir("/proc/self/task"):
            tid = int(name)
            if tid not in self._groups:
                group = CpuQuota(self.fraction, f"cascade-slow-t{tid}").__enter__()
                try:
                    group.add_thread(tid)
                except OSError:  # the thread has just ended
                    group.__exit__()
                    continue
                self._groups[tid] = group

    def _watch(self) -> None:
        while not self._stop.wait(self.scan_s):
            self._assign()

    def throttled_s(self) -> float:
        return sum(g.throttled_s() for g in self._groups.values())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        for group in self._groups.values():
            group.__exit__()
        self._groups.clear()
