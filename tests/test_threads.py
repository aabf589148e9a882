"""A stage given one thread keeps to one core: no library behind it starts a
thread of its own that spins on the other core (numpy's OpenBLAS did, at every
log-mel feature computation; see pipeline/__init__.py)."""
import os
import subprocess
import sys

from tests.conftest import ROOT

# Smart Turn on one ONNX Runtime thread, with its log-mel features in numpy, as the
# pipeline runs it; the process's CPU time over its wall time while it runs
PROBE = """
import time
from stages.eot_smart_turn import SmartTurn  # imports pipeline, then numpy
import numpy as np
turn = SmartTurn(threads=1)
turn.load()
audio = (np.random.default_rng(0).standard_normal(8 * 16000) * 0.1).astype(np.float32)
turn.probability(audio)
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(20):
    turn.probability(audio)
print((time.process_time() - cpu) / (time.perf_counter() - wall))
"""


def test_a_one_thread_stage_uses_one_core():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    cores = float(res.stdout.split()[-1])
    print(f"Smart Turn on one thread used {cores:.2f} cores")
    # one busy thread: ~1.0 (1.9 with OpenBLAS's spinning worker on a 2-core machine)
    assert cores < 1.3
