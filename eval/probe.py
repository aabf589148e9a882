"""How fast this machine is right now: a fixed piece of work, timed.

A shared VM's speed changes under its neighbours' load: in one session the same
report gave V2V p50 407-468 ms, and a one-thread matrix product took 1.43 s in one
hour and 1.85 s in the next. The report (``eval.report``) times this probe before
each replay and once at the end, so that a row replayed on a slower machine is seen
as such, and a ratio between two rows is not read as the pipeline's own change when
it is within the machine's drift.

Three parts, each the fastest of ``repeats`` timings (the least disturbed; back to back,
the same part still varies by up to ~15% on a shared VM):
- compute: float32 matrix products on one thread (what the models' kernels do on a
  batch);
- memory: sums over an array larger than the caches, on one thread (what generating
  one token does: every weight read once);
- two cores: the compute part on two threads at once, its wall time (a neighbour
  that takes one of the VM's two cores shows here, not in the one-thread parts).
Under an emulated slower CPU (``eval.cpu_quota.SlowCpu``) each of the two threads has
its quota (the second is left to settle until the emulation's watcher has given it
one), so the probe shows the slow-down the emulation gives.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

MATRIX = 192  # compute: MATRIX x MATRIX float32 products
PRODUCTS = 120
MEMORY_MB = 64  # memory: an array of this many MB (beyond the caches of a small VM)
SUMS = 2
SETTLE_S = 0.15  # longer than eval.cpu_quota.SlowCpu's scan for new threads (50 ms)
PARTS = ("compute_ms", "memory_ms", "two_cores_ms")
# how a probe reads in the reports (describe())
LEGEND = "compute / memory ms on one thread / compute on both cores at once"


def _timed(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def speed_probe(repeats: int = 5) -> dict[str, float]:
    """{"compute_ms", "memory_ms", "two_cores_ms"}: the fastest of ``repeats`` timings
    of each part.
    NumPy runs them on one thread here (``pipeline`` sets OPENBLAS_NUM_THREADS=1)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATRIX, MATRIX), dtype=np.float32)
    big = np.ones(MEMORY_MB * 2**20 // 4, np.float32)

    def compute() -> None:
        x = a
        for _ in range(PRODUCTS):
            x = a @ x
            x /= np.abs(x).max()  # keep the values finite

    def memory() -> None:
        for _ in range(SUMS):
            big.sum()

    compute(), memory()  # page in, warm the caches and the BLAS
    with ThreadPoolExecutor(1, thread_name_prefix="speed-probe") as other:
        def both() -> None:  # NumPy releases the GIL in its products
            done = other.submit(compute)
            compute()
            done.result()

        other.submit(compute).result()
        time.sleep(SETTLE_S)  # an emulated slower CPU gives the new thread its own quota
        return {"compute_ms": round(_timed(compute, repeats), 2),
                "memory_ms": round(_timed(memory, repeats), 2),
                "two_cores_ms": round(_timed(both, repeats), 2)}


def drift(probes: dict[str, dict[str, float]]) -> Optional[float]:
    """The largest spread of any part across ``probes`` (label -> probe), as a
    fraction of its fastest timing: 0.25 = the slowest was 25% slower. None if fewer
    than two probes."""
    if len(probes) < 2:
        return None
    spread = 0.0
    for part in PARTS:
        values = [p[part] for p in probes.values()]
        spread = max(spread, max(values) / min(values) - 1)
    return spread


def describe(probe: Optional[dict[str, float]]) -> str:
    """A probe as the reports print it, in LEGEND's order ("—" for none)."""
    return "—" if not probe else " / ".join(f"{probe[part]:.1f}" for part in PARTS)
