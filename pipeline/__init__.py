"""Cascade: a low-latency cascaded voice assistant (VAD -> ASR -> LLM -> TTS)."""
import os

# llama.cpp (and CTranslate2) run their threads through GNU OpenMP, whose idle threads
# spin ~300,000 times before they sleep. On two cores shared with the other stages, a
# spinning thread holds a core that the thread it waits for needs: on the emulated
# slower CPU (eval.cpu_quota) a 24-token prefill on two threads took 920-2940 ms with
# that default, 350-370 ms with 10,000 spins, and one generated token 102-445 against
# 34-37 ms; at full speed, quiet, the two settings were alike (~140 ms and ~13 ms).
# Read when libgomp loads (llama_cpp is imported only when its stage loads); an
# explicit GOMP_SPINCOUNT in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# numpy's OpenBLAS starts a worker thread per core at its first matrix product (the
# log-mel features of the ASR and of Smart Turn) and keeps it spinning between
# calls: a "one-thread" ASR or Smart Turn then used 180-190% of the two cores, and an
# ASR encode beside Smart Turn took 98 ms instead of 44. The products are small: one
# thread (read when numpy loads, so this module comes first; the environment wins).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
