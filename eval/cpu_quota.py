"""A slower CPU on demand: a CPU quota through the cgroup v1 ``cpu`` controller.

``CpuQuota(fraction)`` makes a cgroup whose members together get ``fraction`` of
one core, with a short period (1 ms, or the shortest that keeps the quota at the
kernel's 1 ms minimum) so that throttling stays fine-grained. Threads are moved
into it one by one (a stage's worker thread: threads it starts later inherit the
group), or a whole process. On exit everything is moved back and the group is
removed. Needs root and cgroup v1 (``/sys/fs/cgroup/cpu``); the error says so.
"""
from __future__ import annotations

import math
import os
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
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        return self

    def add_thread(self, tid: int) -> None:
        (self.path / "tasks").write_text(str(tid))

    def add_process(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Time the group's members spent throttled, in seconds."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0

    def __exit__(self, *exc) -> None:
        for tid in (self.path / "tasks").read_text().split():
            try:
                (ROOT / "tasks").write_text(tid)
            except OSError:  # the thread has ended
                pass
        self.path.rmdir()
