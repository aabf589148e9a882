"""How many CPU threads Whisper gets, for its encoder and for its decoder: timed on
this machine at load (``asr.cpu_threads: auto``).

A CTranslate2 Whisper transcription is one encoder pass over the window, then one
decoder step per token, each of small matrices, where the threads' synchronisation
can cost more than a second thread gains. On the 2-core AMD EPYC where Cascade is
developed, the fixed work below took the decoder 66-84 ms on one thread against 82-96
on two, the encoder 53-66 on either; on the emulated slower CPU (eval's ``--slow
0.4``) two threads won both (decoder 189 against 263 ms, encoder 89 against 146). So
the counts are measured, not fixed: a model is loaded per candidate count, the same fixed work (a
``WINDOW_S`` window of noise through the encoder, ``TOKENS`` forced tokens through the
decoder, so its length does not depend on what the audio says) is timed on each, and
for each phase more threads are kept only when clearly faster (by ``MARGIN``): one
thread also leaves the other core to Smart Turn, which runs beside the ASR, and to
listen-ahead's decoder replica. When the two phases choose differently, the encoder's
output is handed to the other model's decoder as is (same weights).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from stages.whisper_window import HOP, SAMPLE_RATE, encode, window_features

# more threads must be this much faster (as a fraction of the fewer threads' time)
MARGIN = 0.10
# a typical decode's window: asr.window_retry_s (the floor, asr.window_floor_s, was 10 s
# too until the fifteenth session; timed on 6 s, the decoder chose two threads, slower
# in a turn beside Smart Turn)
WINDOW_S = 10.0
TOKENS = 16  # about a 10-word utterance
REPEATS = 2  # timed rounds, after one untimed (oneDNN's primitives, the page-in)
TEXT = " We also need a small plastic snake and a big toy frog for the kids."


@dataclass
class ThreadChoice:
    encoder: int
    decoder: int
    encode_ms: dict[int, float] = field(default_factory=dict)  # candidate -> best time
    decode_ms: dict[int, float] = field(default_factory=dict)

    def record(self) -> dict:
        return {"encoder": self.encoder, "decoder": self.decoder,
                "encode_ms": {str(k): round(v, 1) for k, v in self.encode_ms.items()},
                "decode_ms": {str(k): round(v, 1) for k, v in self.decode_ms.items()}}


def usable_cores() -> int:
    """The cores this process may run on (its affinity: a container's share of a host)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def candidates(cores: int | None = None) -> list[int]:
    """1, 2 and 4 threads, as far as the process has cores."""
    cores = cores or usable_cores()
    return sorted({min(n, cores) for n in (1, 2, 4)})


def features(model) -> np.ndarray:
    """The fixed work's encoder input: ``WINDOW_S`` of faint noise as log-mel frames."""
    frames = int(WINDOW_S * SAMPLE_RATE / HOP)
    audio = (0.01 * np.random.default_rng(0).standard_normal(frames * HOP)).astype(np.float32)
    return window_features(model, audio, frames)


def forced_decode(model, tokenizer, encoded):
    """Blocking: ``TOKENS`` forced tokens and one more through ``model``'s decoder
    (CTranslate2 steps through a prefix one token at a time: the work does not depend
    on what the audio says)."""
    forced = tokenizer.encode(TEXT)[:TOKENS]
    prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps] + forced
    # CTranslate2 decodes at most max_length // 2 steps, the forced ones included
    return model.model.generate(encoded, [prompt], beam_size=1,
                                max_length=2 * (len(forced) + 1))[0]


def timed(work: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = work()
    return (time.perf_counter() - t0) * 1000, out


def fewest(ms: dict[int, float], margin: float) -> int:
    """The fewest threads, unless more are faster by ``margin`` (of the time so far)."""
    counts = sorted(ms)
    best = counts[0]
    for n in counts[1:]:
        if ms[n] < (1 - margin) * ms[best]:
            best = n
    return best


def choose(load: Callable[[int], object], tokenizer_for: Callable[[object], object],
           counts: Sequence[int], margin: float = MARGIN
           ) -> tuple[dict[int, object], ThreadChoice]:
    """Load a model for each thread count (``load(n)``) and time the fixed encoder pass
    and the fixed decode on each: one untimed round, then ``REPEATS`` rounds taking
    each model in turn, so that a noisy moment falls on all of them; the best time of
    each. Returns the models to keep (by count: the encoder's and the decoder's) and
    the choice."""
    models = {n: load(n) for n in counts}
    if len(models) == 1:
        (n, model), = models.items()
        return models, ThreadChoice(n, n)
    tokenizers = {n: tokenizer_for(m) for n, m in models.items()}
    feats = features(next(iter(models.values())))
    enc = {n: float("inf") for n in models}
    dec = dict(enc)
    for i in range(REPEATS + 1):
        for n, model in models.items():
            ms_enc, encoded = timed(lambda: encode(model, feats))
            ms_dec, _ = timed(lambda: forced_decode(model, tokenizers[n], encoded))
            if i:
                enc[n], dec[n] = min(enc[n], ms_enc), min(dec[n], ms_dec)
    choice = ThreadChoice(fewest(enc, margin), fewest(dec, margin), enc, dec)
    return {n: models[n] for n in {choice.encoder, choice.decoder}}, choice
