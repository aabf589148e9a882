"""The emulated slower CPU (cgroup v1 CPU quotas): a busy thread gets its fraction of
a core, and threads started later get a quota of their own."""
import threading
import time
from pathlib import Path

import pytest

from eval.cpu_quota import ROOT, SlowCpu


def spin(seconds: float) -> float:
    """Busy for ``seconds`` of wall time; returns the CPU time it got."""
    t0, c0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < seconds:
        pass
    return time.thread_time() - c0


@pytest.fixture
def cgroups():
    if not (ROOT / "cpu.cfs_quota_us").exists():
        pytest.skip("no cgroup v1 cpu controller on this machine (the emulation needs one)")


def test_every_thread_gets_its_fraction_of_a_core(cgroups):
    got = []
    with SlowCpu(0.4) as slow:
        time.sleep(0.1)
        worker = threading.Thread(target=lambda: got.append(spin(1.0)))
        worker.start()  # started later: the watcher gives it a group of its own
        time.sleep(0.2)
        groups = [p for p in ROOT.glob("cascade-slow-t*")
                  if str(worker.native_id) in (p / "tasks").read_text().split()]
        worker.join()
        throttled = slow.throttled_s()
    assert len(groups) == 1 and f"t{worker.native_id}-" in groups[0].name
    assert got[0] <= 0.5  # at most 40% of a core (plus the first 50 ms before the watcher)
    assert throttled > 0.2  # the quota, not the load, held it back
    assert not any(Path(g).exists() for g in groups)  # removed on exit
